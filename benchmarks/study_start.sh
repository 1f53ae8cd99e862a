#!/usr/bin/env bash
# Start (or continue) one recipe-study candidate (issue #34) in the background at its session's
# first step, like a campaign leg (benchmarks/CAMPAIGN.md):
#
#   bash benchmarks/study_start.sh RECIPE MINUTES
#
# RECIPE: a metaug_training/recipes/study-*.json file; MINUTES: training minutes (run.stop_after_minutes),
# chosen so the run stops, saves and exports with at least 35 minutes of the session left. It
# resumes exactly from the recipe's run.out_dir checkpoint when that is on the machine, else
# warm-restarts from the committed state (the recipe's run.warm_start), else starts from scratch.
# Environment: METAUG_PY (python with the package installed; default: python on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${1:?usage: bash benchmarks/study_start.sh RECIPE MINUTES}
MINUTES=${2:?usage: bash benchmarks/study_start.sh RECIPE MINUTES}
PY=${METAUG_PY:-python}
RUN=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['run']['out_dir'])" "$RECIPE")
mkdir -p "$RUN"
COMMITTED_LOG="$(dirname "$RUN")/log.jsonl"
if [ ! -f "$RUN/log.jsonl" ] && [ -f "$COMMITTED_LOG" ]; then
    cp "$COMMITTED_LOG" "$RUN/log.jsonl"   # the training minutes keep adding up across legs
fi
setsid nohup "$PY" -m metaug_cli.train --config "$RECIPE" --resume \
    "run.stop_after_minutes=$MINUTES" >> "$RUN/train.out" 2>&1 < /dev/null &
echo "started (pid $!): $MINUTES training minutes from $(date -u +%H:%M) UTC; log $RUN/train.out"
