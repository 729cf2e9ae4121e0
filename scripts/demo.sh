#!/usr/bin/env bash
# The identity workflow on embedded defaults, in a throwaway directory: create a node identity,
# rotate its key, sign and verify, announce, and seal a file to the node through its announcement.
# VAIN_BIN may point at an already built `vain`; otherwise it is built in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VAIN_BIN:-}" ]; then
  cargo build --release -q -p vain-node
  VAIN_BIN=target/release/vain
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() { echo; echo "\$ vain $*"; "$VAIN_BIN" "$@"; }

run identity new --dir "$work/node"
run identity rotate --dir "$work/node"
echo "global model v1" > "$work/model.txt"
run identity sign --dir "$work/node" "$work/model.txt" --out "$work/model.sig"
key=$("$VAIN_BIN" identity show --dir "$work/node" | awk '/^current key:/ {print $3}')
run identity verify "$work/model.txt" --signature "@$work/model.sig" --key "$key"
run identity announce --dir "$work/node" --out "$work/node.ann" --address /ip4/127.0.0.1/udp/4433/quic-v1 --roles client,aggregator
run identity seal "$work/model.txt" --to "$work/node.ann" --out "$work/model.sealed" --aad round=1
run identity open --dir "$work/node" "$work/model.sealed" --out "$work/model.opened" --aad round=1
cmp "$work/model.txt" "$work/model.opened"
echo
echo "identity workflow complete: rotated key verified, sealed file round-tripped"
run bench aggregate --backend auto --params 256k --updates 16 --reps 1
