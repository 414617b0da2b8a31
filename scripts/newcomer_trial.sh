#!/usr/bin/env bash
# Issue 25's newcomer trial: a fresh clone, only the README's commands, a 768x512 photo sent with no
# parameters, its job polled to the end, then a 2x render. Everything goes to the log named below.
# Usage: scripts/newcomer_trial.sh PHOTO.png LOG   (run it on an otherwise idle machine: it times the fit)
set -euo pipefail
photo=$(readlink -f "$1"); log=$(readlink -f "$2")
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d); port=${PORT:-8765}
exec > >(tee "$log") 2>&1
echo "# newcomer trial, $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
git clone -q "$repo" "$work/tuner" && cd "$work/tuner" && git log --oneline -1
t0=$(date +%s)
python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e . 2>&1 | grep -v '^WARNING: Location' || true
echo "install: $(( $(date +%s) - t0 )) s"
.venv/bin/tuner serve --data-dir ./tuner-data --port "$port" > serve.log 2>&1 &
server=$!; trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 1; done
t1=$(date +%s)
curl -s -F "file=@$photo" "http://127.0.0.1:$port/v1/images" | tee job.json; echo
job=$(python3 -c 'import json; print(json.load(open("job.json"))["job_id"])')
img=$(python3 -c 'import json; print(json.load(open("job.json"))["image_id"])')
while true; do
  state=$(curl -s "http://127.0.0.1:$port/v1/jobs/$job")
  echo "$(( $(date +%s) - t1 )) s: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["status"], round(d.get("progress") or 0, 3), "eta_s", d.get("eta_s"), "psnr", d.get("psnr"))' "$state")"
  case "$state" in *'"succeeded"'*|*'"failed"'*|*'"cancelled"'*) break;; esac
  sleep 30
done
echo "job done after $(( $(date +%s) - t1 )) s"
curl -s "http://127.0.0.1:$port/v1/images/$img"; echo
t2=$(date +%s)
curl -s -o render-2x.png -w 'render 2x: HTTP %{http_code}, %{size_download} bytes, %{time_total} s\n' \
  "http://127.0.0.1:$port/v1/images/$img/render?width=1536"
.venv/bin/python -c 'from PIL import Image; print("rendered size", Image.open("render-2x.png").size)'
echo "total from upload: $(( $(date +%s) - t1 )) s"
