#!/usr/bin/env bash
# The attack × rule table of docs/robustness.md: `vain train simulate` once per cell (mnist-cnn,
# 20 clients, 30 % attackers, Dirichlet(0.5), 30 rounds), then one markdown row per cell.
#   VAIN_BIN=target/release/vain bash scripts/robustness.sh [OUT_DIR] [ROUNDS]
# Cells to run: ATTACKS, RULES, REPUTATION and PRE (pre-aggregation steps as `--pre` spells them,
# e.g. "none nnm:6 arc:6+nnm:6"; space-separated) override the defaults.
set -euo pipefail
bin=${VAIN_BIN:-target/release/vain}
out=${1:-vain-robustness}
rounds=${2:-30}
attacks=${ATTACKS:-"none alie ipm label-flip sign-flip scale:100 noise free-ride backdoor mixed"}
rules=${RULES:-"fedavg median"}
reputation=${REPUTATION:-"on off"}
pres=${PRE:-"none"}
mkdir -p "$out"
cell() { # attack rule rep pre -> the cell's directory name
  local name="${1//:/_}-${2//[:,]/_}-rep-$3"
  [ "$4" = none ] || name="$name-pre-${4//[:,+]/_}"
  echo "$name"
}
for attack in $attacks; do
  for rule in $rules; do
    for rep in $reputation; do
     for pre in $pres; do
      name=$(cell "$attack" "$rule" "$rep" "$pre")
      [ -f "$out/$name/summary.json" ] && continue
      malicious=0.3
      a=$attack
      if [ "$attack" = none ]; then malicious=0; a=sign-flip; fi
      "$bin" train simulate --model mnist-cnn --clients 20 --malicious "$malicious" --attack "$a" \
        --rule "$rule" --pre "$pre" --partition dirichlet:0.5 --rounds "$rounds" --reputation "$rep" --seed 1 \
        --quiet --out "$out/$name" > "$out/$name.log" 2>&1 || { echo "$name failed"; cat "$out/$name.log"; }
      echo "$name done"
     done
    done
  done
done
echo "| attack | rule | pre | reputation | final accuracy % | best accuracy % | backdoor success % | attackers' final weight % | honest suspended | wall s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for attack in $attacks; do
  for rule in $rules; do
    for rep in $reputation; do
     for pre in $pres; do
      f="$out/$(cell "$attack" "$rule" "$rep" "$pre")/summary.json"
      [ -f "$f" ] || continue
      python3 - "$f" "$attack" "$rule" "$rep" "$pre" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
bd = s["final_backdoor_success"]
w = s["attacker_weight"][-1] if s["attacker_weight"] else 0
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[5]} | {sys.argv[4]} | {100*s['final_accuracy']:.2f} | {100*max(s['accuracy']):.2f} | "
      f"{'-' if bd is None else f'{100*bd:.1f}'} | {100*w:.1f} | {s['honest_suspended']} | {s['wall_seconds']:.0f} |")
PY
     done
    done
  done
done
