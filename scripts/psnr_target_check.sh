#!/usr/bin/env bash
# Does `tuner encode --psnr Y` land in [Y, Y + 0.5 dB] on a 768x512 photo? One encode, its blob's info.
# Usage: scripts/psnr_target_check.sh IMAGE Y [EFFORT]   (writes /tmp/psnr-check.tnr)
set -euo pipefail
img=$1; y=$2; effort=${3:-4}
start=$(date +%s)
.venv/bin/tuner encode "$img" --psnr "$y" --effort "$effort" --device cpu -o /tmp/psnr-check.tnr
echo "seconds: $(( $(date +%s) - start ))"
.venv/bin/tuner info /tmp/psnr-check.tnr
