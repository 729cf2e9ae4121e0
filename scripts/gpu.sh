#!/usr/bin/env bash
# Prepares the CUDA checks for a GPU machine that has no Rust toolchain (../shared/gpu.md):
# builds the kernels' tests and `vain` with the CUDA backend, strips them into .gpu/ (list .gpu/
# in .git/info/exclude), and writes .gpu/run.sh, which runs them there: the CUDA tests, then
# `vain bench` on the CUDA backend (page-locked pool buffers, uploads straight from them) and
# the aggregation-rule bench, with full logs under $OUT and a short summary on stdout.
#
#   bash scripts/gpu.sh            # here
#   device run: carry [".gpu"], command "bash .gpu/run.sh", timeout_s 480
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu
mkdir -p .gpu
cargo build --release -p vain-node --features cuda
cp target/release/vain .gpu/vain
cargo test -p vain-kernels --features cuda --release --no-run --message-format=json 2>/dev/null |
  jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test == true) | .executable' |
  while read -r exe; do cp "$exe" ".gpu/test-$(basename "$exe" | sed 's/-[0-9a-f]*$//')"; done
strip .gpu/vain .gpu/test-*
cat > .gpu/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine from the repository root; logs under $OUT.
set -u
OUT=${OUT:-/tmp/vain-gpu}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi"
for t in .gpu/test-*; do
  timeout 120 "$t" --nocapture > "$OUT/$(basename "$t").log" 2>&1
  echo "$(basename "$t"): exit $? ($(grep -h "test result" "$OUT/$(basename "$t").log" | tail -1))"
done
run() {
  local name=$1
  shift
  timeout 150 .gpu/vain "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $?"
  grep -E "GB of payload|wire GB/s|page-locked|ours /|backend|FedAvg|median" "$OUT/$name.log" | head -12
}
run bench-cuda bench --backend cuda --no-baseline --rounds 5 --out "$OUT/bench-cuda"
run bench-cuda-16M bench --backend cuda --no-baseline --params 16M --rounds 3 --out "$OUT/bench-cuda-16M"
run bench-cpu bench --backend cpu --no-baseline --rounds 5 --out "$OUT/bench-cpu"
run aggregate-cuda bench aggregate --backend cuda
RUN
chmod +x .gpu/run.sh
du -sh .gpu
