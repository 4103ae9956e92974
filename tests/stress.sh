#!/usr/bin/env bash
# Runs the command given (a pytest run) while one CPU hog per core competes with it at the
# same priority, as a loaded CI machine would; the hogs end with the run, also on failure.
set -uo pipefail
hogs=()
trap 'kill "${hogs[@]}" 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq "$(nproc)"); do
  python3 -c 'while True: pass' &
  hogs+=($!)
done
echo "stress: ${#hogs[@]} CPU hogs running (pids ${hogs[*]})"
"$@"
