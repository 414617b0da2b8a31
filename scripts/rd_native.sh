#!/usr/bin/env bash
# The codec-at-real-scale issue's CPU runs at 768x512, resumable, from a frozen copy of a commit so that
# edits in the checkout never reach a run in progress (an ABI change of the native kernel mid-run kills it).
# Usage: scripts/rd_native.sh PART [COMMIT]   (progress lines in docs/results/*.log)
#   effort4-all      the 12 Kodak images at the default effort, 0.25-1 bpp
#   effort5-4images  the first 4 at effort 5 (the highest that fits 10 minutes an encode on the 2-core CPUs)
#   probe            effort EFFORT (default 5) on the images NAMES (default kodim23) at the rates BPP (default 1.0): does
#                    that effort fit 10 minutes an encode on this machine?
#   rcfit-2.0        the rate-control table's 2-bpp row at native scale: rc-fit on kodim01 and kodim03 at
#                    effort 4 with DEPTHS (default 1,3,2) hidden layers, in the progress file of the
#                    0.25- and 1-bpp rows; the table it writes has the 2.0 row only
# Results go to docs/results/rd-native-deep-<part>.json (probe: rd-native-deep-effort<EFFORT>-probe.json; + .png,
# .log) and a -progress.json that the next run
# continues from; stop it with kill (the encode under way is lost, the finished ones are kept).
set -euo pipefail
part=${1:?part}; commit=${2:-HEAD}
root=$(cd "$(dirname "$0")/.." && pwd)
kodak=${KODAK:-$root/../shared/data/kodak}
results=$root/docs/results
bench=(rd --bpp 0.25,0.5,0.75,1.0)
name=rd-native-deep-$part
case $part in
  effort4-all) args=(--effort 4); progress=rd-native-deep-effort4-progress.json ;;
  effort5-4images) args=(--effort 5 --limit 4); progress=rd-native-deep-effort5-progress.json ;;
  probe) args=(--effort "${EFFORT:-5}"); name=rd-native-deep-effort${EFFORT:-5}-probe; progress=$name-progress.json
    bench=(rd --bpp "${BPP:-1.0}")
    probe=/tmp/tuner-rd-probe-images; rm -rf "$probe"; mkdir -p "$probe"
    for n in ${NAMES:-kodim23}; do ln -s "$(realpath "$kodak/$n.png")" "$probe/$n.png"; done
    kodak=$probe ;;
  rcfit-2.0) progress=rc-fit-native-effort4-progress.json
    bench=(rc-fit --bpp 2.0 --guesses 5.5 --depths "${DEPTHS:-1,3,2}")
    args=(--limit 2 --effort 4) ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac
tree=/tmp/tuner-rd-$part
git -C "$root" worktree remove --force "$tree" 2>/dev/null || true
git -C "$root" worktree add -f --detach "$tree" "$commit" >/dev/null
cd "$tree"  # python -c puts the cwd first on sys.path: this tree's code, not the checkout's
PYTHONPATH=$tree "$root/.venv/bin/python" -c \
  "import sys; from tuner_cli.main import main; sys.argv[0] = 'tuner'; sys.exit(main())" \
  bench "${bench[@]}" --images "$kodak" "${args[@]}" --device cpu \
  --json "$results/$name.json" --results "$results/$progress" \
  2>>"$results/$name.log"
