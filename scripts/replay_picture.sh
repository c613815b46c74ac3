#!/bin/sh
# The README's replay picture from a real run: the whole cell (8 sensors at 300/s, 5 s period,
# the specified rule) on the drift-step profile, the step 60 s after the start in the middle of
# a window, for 2 minutes (and 35 s more while the replay reads it); then `workcell replay` of
# a guarded policy over it, drawn into docs/replay.png (or $1), and its table on stdout.
# Run from the repository root:
#   sh scripts/replay_picture.sh [docs/replay.png]
set -eu
out="${1:-docs/replay.png}"
data="$(mktemp -d)"
port=50571
step=$(( ( $(date +%s) / 5 + 12 ) * 5 + 2 ))  # 60 s or so from now, 2.5 s into a window
WORKCELL_SENSOR_PROFILE=drift-step WORKCELL_SENSOR_STEP_AT="$step.5" \
  .venv/bin/workcell run --no-live --duration 160 --data "$data" \
  --controller-listen "127.0.0.1:$port" --manipulator-listen 127.0.0.1:7771 >"$data/run.out" &
cell=$!
sleep 125  # the replay (matplotlib) starts slowly beside a busy cell: 35 s to spare
.venv/bin/workcell replay --controller "127.0.0.1:$port" --min-effect 8 --confirm 2 -o "$out"
wait "$cell"
rm -rf "$data"
