#!/bin/bash
# Decode before/after, alternating in one run (docs/speed.md): `zstd -d -T1` of the model file, then the base
# build's and this build's `nnmedia decompress` of the same archive, round after round, so both see the same
# machine state. Prints one line per run: label, wall s, user s, sys s, peak RSS KB.
#
#   bench/decode-ab.sh BASE_CHECKOUT ROUNDS JOBS ARCHIVE.nnm MODEL.zst [ARCHIVE.nnm MODEL.zst ...]
#
# BASE_CHECKOUT: another checkout with `npm run build` done (e.g. a git worktree of main). MODEL.zst: the
# original model file through `zstd -3`, the baseline's input. Outputs go to a temporary folder, removed after.
set -euo pipefail
base=$1 rounds=$2 jobs=$3
shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { /usr/bin/time -f "$1 %e %U %S %M" "${@:2}" 2>&1 >/dev/null | tail -1; rm -f "$tmp"/out*; }
for ((r = 1; r <= rounds; r++)); do
  set -- "${@}"
  args=("$@")
  for ((i = 0; i < ${#args[@]}; i += 2)); do
    nnm=${args[i]} zst=${args[i + 1]} name=$(basename "${args[i]}" .nnm)
    run "$name zstd-d" zstd -d -T1 -q -f "$zst" -o "$tmp/out.zstd"
    run "$name before-j$jobs" node "$base/dist/cli/main.js" decompress "$nnm" -o "$tmp/out.$(basename "$zst" .zst | sed 's/.*\.//')" --jobs "$jobs"
    run "$name after-j$jobs" node "$here/dist/cli/main.js" decompress "$nnm" -o "$tmp/out.$(basename "$zst" .zst | sed 's/.*\.//')" --jobs "$jobs"
  done
done
