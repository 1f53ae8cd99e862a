#!/usr/bin/env bash
# Start (or continue) the campaign run in the background at a leg's first step
# (benchmarks/CAMPAIGN.md):
#
#   bash benchmarks/campaign_start.sh [SESSION_START]     # SESSION_START: `date` text, default now
#   CAMPAIGN=2 bash benchmarks/campaign_start.sh [SESSION_START]   # campaign 2 (OUCL): the same deadline,
#       started by benchmarks/study_start.sh with its recipe (metaug_training/recipes/study-oucl-shared.json)
#
# The run stops by itself (run.stop_after_minutes), saves and exports with 37 minutes of the
# 180-minute session left. It resumes exactly from runs/cifar10-alexnet32-metaug/full when that
# checkpoint is on the machine, else warm-restarts from the committed state
# runs/cifar10-alexnet32-metaug/state (the recipe's run.warm_start). The committed log is copied
# into the run folder first, so the campaign's training minutes keep adding up.
# Environment: METAUG_PY (python with the package installed; default: python on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date -d "${1:-now}" +%s)
NOW=$(date +%s)
MINUTES=$(( (START + (180 - 37) * 60 - NOW) / 60 ))
if [ "$MINUTES" -lt 30 ]; then
    echo "only $MINUTES training minutes would be left in this session; not starting" >&2
    exit 1
fi
if [ "${CAMPAIGN:-1}" != 1 ]; then
    PATHS=$(python -m metaug_release campaign paths --campaign "$CAMPAIGN")
    eval "$PATHS"
    exec bash benchmarks/study_start.sh "$RECIPE" "$MINUTES"
fi
RUN=runs/cifar10-alexnet32-metaug/full
mkdir -p "$RUN"
if [ ! -f "$RUN/log.jsonl" ] && [ -f runs/cifar10-alexnet32-metaug/log.jsonl ]; then
    cp runs/cifar10-alexnet32-metaug/log.jsonl "$RUN/log.jsonl"
fi
PY=${METAUG_PY:-python}
setsid nohup "$PY" -m metaug_cli.train --config metaug_training/recipes/cifar10-alexnet32-metaug.json --resume \
    "run.stop_after_minutes=$MINUTES" >> "$RUN/train.out" 2>&1 < /dev/null &
echo "started (pid $!): $MINUTES training minutes, stops by $(date -d "@$(( NOW + MINUTES * 60 ))" +%H:%M); log $RUN/train.out"
