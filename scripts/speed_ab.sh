#!/usr/bin/env bash
# Issue 26's speed check: `tuner bench speed` (fit steps and renders) and one 768x512 encode at 1 bpp, effort 4, run from
# two checkouts alternately (old, new, old, new, ...) on one machine, so both see the same load.
#   scripts/speed_ab.sh OLD_TREE NEW_TREE OUT_DIR [ROUNDS] [IMAGE]
# Resumable: a step whose result exists is skipped. Progress: OUT_DIR/progress.log; encodes: OUT_DIR/encodes.tsv.
set -euo pipefail
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); out=$3; rounds=${4:-2}
image=${5:-/work/shared/data/kodak/kodim03.png}
py=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
mkdir -p "$out/img"
cp -n "$image" "$out/img/"
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$out/progress.log"; }
tuner() { local tree=$1; shift; (cd "$tree" && PYTHONPATH="$tree" "$py" -c "from tuner_cli.main import main; main()" "$@"); }
for r in $(seq 1 "$rounds"); do
  for side in old new; do
    tree=$old; [ "$side" = new ] && tree=$new
    if [ ! -s "$out/speed-$side-$r.json" ]; then
      log "round $r $side: bench speed"
      tuner "$tree" bench speed --images "$out/img" --limit 1 --device cpu --threads 2 \
        --skip batch,reference --sizes 768x512,1920x1080 --json "$out/speed-$side-$r.json" > /dev/null 2>&1
    fi
    if ! grep -q "^$r	$side	" "$out/encodes.tsv" 2>/dev/null; then
      log "round $r $side: encode"
      t0=$(date +%s.%N)
      tuner "$tree" encode "$image" -o "$out/$side-$r.tnr" --bpp 1 --effort 4 --seed 0 > /dev/null 2>&1
      t1=$(date +%s.%N)
      printf '%s\t%s\t%.1f\t%s\n' "$r" "$side" "$(echo "$t1 - $t0" | bc)" "$(sha256sum "$out/$side-$r.tnr" | cut -c1-16)" \
        >> "$out/encodes.tsv"
      log "round $r $side: encode done"
    fi
  done
done
log "done"
