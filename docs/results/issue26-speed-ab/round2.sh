#!/usr/bin/env bash
# round 2: bench speed only, old then new
set -euo pipefail
out=/tmp/speedab; py=/work/main/.venv/bin/python
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$out/progress.log"; }
for side in old new; do
  tree=/tmp/ident/$side
  [ -s "$out/speed-$side-2.json" ] && continue
  log "round 2 $side: bench speed"
  (cd "$tree" && PYTHONPATH="$tree" "$py" -c "from tuner_cli.main import main; main()" bench speed --images "$out/img" \
     --limit 1 --device cpu --threads 2 --skip batch,reference --sizes 768x512,1920x1080 --json "$out/speed-$side-2.json" > /dev/null 2>&1)
done
log "round 2 done"
