#!/usr/bin/env bash
# The identity workflow, a small federation and an audited DP aggregate on embedded defaults, in a
# throwaway directory: create a node identity, rotate its key, sign and verify, announce, and seal
# a file to the node through its announcement; simulate a federation with attackers; aggregate
# real client updates with DP noise sealed to an auditor, who checks it.
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
# A short simulated federation on the embedded digits: two of six clients attack, the aggregation
# report turns into ledger evidence, and their weight falls.
run train simulate --model mnist-mlp --clients 6 --malicious 0.34 --attack sign-flip --partition iid \
  --rounds 3 --local-steps 5 --out "$work/train"
# DP noise whose secret only an auditor can open.
run identity new --dir "$work/auditor"
run identity announce --dir "$work/auditor" --out "$work/auditor.ann" --roles validator
for c in 0 1 2; do
  "$VAIN_BIN" train local --model mnist-mlp --clients 3 --client "$c" --partition iid --local-steps 5 \
    --dir "$work/node" -o "$work/u$c.safetensors" > /dev/null
done
run aggregate "$work"/u?.safetensors -o "$work/clean.safetensors" --backend cpu --clip 5
run aggregate "$work"/u?.safetensors -o "$work/noisy.safetensors" --backend cpu --clip 5 --noise-multiplier 0.5 --auditor "$work/auditor.ann"
run audit noise --dir "$work/auditor" --aggregate "$work/noisy.safetensors" --report "$work/noisy.report.json" \
  --sealed "$work/noisy.noise.sealed" --reference "$work/clean.safetensors"
