#!/usr/bin/env bash
# The GPU measurements, made to run in one call of the device tool from the repository root.
# Usage: scripts/gpu-checks.sh PART...   with PART one of: env paper paper-tuner speed rcfit rd
# Needs (see docs/GPU-CHECKS.md): .kodak/ (a copy of ../shared/data/kodak) and .whl/ (constriction's
# cp312 wheel) carried along; results and logs go to $OUT (the device tool brings them back).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
IMAGES=${IMAGES:-.kodak}
LIMIT=${LIMIT:-12}
tuner() { python3 -m tuner_cli "$@"; }
status=0
for part in "${@:-env}"; do
  echo "== $part $(date -u +%FT%TZ)"
  case $part in
    env)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
      python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt" ;;
    paper)
      tuner bench paper --images "$IMAGES" --limit "$LIMIT" --epochs 1000 --device cuda --json "$OUT/paper.json" \
        2>&1 | tee "$OUT/paper.log" ;;
    paper-tuner)  # TUNER alone, e.g. to explore: TUNER_ARGS="--tuner bandlimit=64 --schedule cosine"
      # shellcheck disable=SC2086
      tuner bench paper --images "$IMAGES" --limit "$LIMIT" --epochs 1000 --device cuda --methods tuner \
        ${TUNER_ARGS:-} --json "$OUT/paper-tuner.json" 2>&1 | tee "$OUT/paper-tuner.log" ;;
    speed)
      tuner bench speed --images "$IMAGES" --device cuda --limit 4 --steps 200 --full-encode \
        --json "$OUT/speed.json" 2>&1 | tee "$OUT/speed.log" ;;
    rcfit)
      # Depth as the CPU refit found it (docs/CODEC.md, "Depth at native scale"): one layer alone would lose it.
      tuner bench rc-fit --images "$IMAGES" --limit "${RC_LIMIT:-4}" --steps "${STEPS:-3000}" --device cuda \
        --depths "${DEPTHS:-1,2,3,4}" --json "$OUT/table.json" 2>&1 | tee "$OUT/rcfit.log"
      # A later `rd` in the same call measures the codec with the table just fitted.
      [ -s "$OUT/table.json" ] && cp "$OUT/table.json" tuner_model/rate/table.json ;;
    rd)
      tuner bench rd --images "$IMAGES" --limit "$LIMIT" --bpp "${BPPS:-0.25,0.5,0.75,1.0}" --steps "${STEPS:-3000}" \
        --device cuda --json "$OUT/rd.json" 2>&1 | tee "$OUT/rd.log" ;;
    *) echo "unknown part $part"; status=2 ;;
  esac
  [ "${PIPESTATUS[0]:-0}" = 0 ] || status=1
done
exit $status
