#!/usr/bin/env bash
# The codec-at-real-scale issue's RD runs on the CPU, resumable, from a frozen copy of a commit so that
# edits in the checkout never reach a run in progress (an ABI change of the native kernel mid-run kills it).
# Usage: scripts/rd_native.sh effort4-all|effort5-4images [COMMIT]   (progress lines in docs/results/*.log)
#   effort4-all      the 12 Kodak images at the default effort, 0.25-1 bpp
#   effort5-4images  the first 4 at effort 5 (the highest that fits 10 minutes an encode on a 2-core Xeon)
# Results go to docs/results/rd-native-deep-<part>.json (+ .png) and a -progress.json that the next run
# continues from; stop it with kill (the encode under way is lost, the finished ones are kept).
set -euo pipefail
part=${1:?part}; commit=${2:-HEAD}
root=$(cd "$(dirname "$0")/.." && pwd)
kodak=${KODAK:-$root/../shared/data/kodak}
case $part in
  effort4-all) args=(--effort 4); progress=rd-native-deep-effort4-progress.json ;;
  effort5-4images) args=(--effort 5 --limit 4); progress=rd-native-deep-effort5-progress.json ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac
tree=/tmp/tuner-rd-$part
git -C "$root" worktree remove --force "$tree" 2>/dev/null || true
git -C "$root" worktree add -f --detach "$tree" "$commit" >/dev/null
cd "$tree"  # python -c puts the cwd first on sys.path: this tree's code, not the checkout's
PYTHONPATH=$tree "$root/.venv/bin/python" -c \
  "import sys; from tuner_cli.main import main; sys.argv[0] = 'tuner'; sys.exit(main())" \
  bench rd --images "$kodak" --bpp 0.25,0.5,0.75,1.0 "${args[@]}" --device cpu \
  --json "$root/docs/results/rd-native-deep-$part.json" --results "$root/docs/results/$progress" \
  2>>"$root/docs/results/rd-native-deep-$part.log"
