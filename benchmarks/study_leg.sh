#!/usr/bin/env bash
# Everything a recipe-study candidate's session does after its run has stopped (issue #34,
# python -m metaug_release study):
#
#   bash benchmarks/study_leg.sh NAME RECIPE [SNAPSHOT.pt ...]
#
# 1. export the run's last checkpoint as the campaign's legs do (fc folder, truncated after fc,
#    float16 weights) and evaluate it (python -m metaug_release evaluate: weighted k-NN k=200/20 and
#    the fast linear probe on conv and fc) -> benchmarks/recipe_study/NAME.json;
# 2. each SNAPSHOT (a copy of the run's checkpoint taken while it trained) the same way, k-NN only
#    -> benchmarks/recipe_study/NAME-stepS.json: the intermediate points of the learning curve;
# 3. the candidate's row in benchmarks/recipe_study.jsonl, the RESULTS.md section and the plot
#    (python -m metaug_release study row);
# 4. the committed resume state runs/study/NAME/state (metaug-compact-state: weights, MAGs and
#    schedule position; under the 30 MB budget) with the run's log and config beside it, so the
#    candidate can continue as campaign 2 on any machine (its recipe's run.warm_start).
#
# Environment: DATA (CIFAR-10 folder with train/ and test/; default: the shared archive extracted
# to /tmp/cifar), WORK (feature folders; default /tmp/metaug-study).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: bash benchmarks/study_leg.sh NAME RECIPE [SNAPSHOT.pt ...]}
RECIPE=${2:?usage: bash benchmarks/study_leg.sh NAME RECIPE [SNAPSHOT.pt ...]}
shift 2
RUN=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['run']['out_dir'])" "$RECIPE")
STATE=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['run']['warm_start'])" "$RECIPE")
DATA=${DATA:-/tmp/cifar/cifar10}
WORK=${WORK:-/tmp/metaug-study}/$NAME
if [ ! -d "$DATA/train" ]; then
    mkdir -p /tmp/cifar && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar
    DATA=/tmp/cifar/cifar10
fi
mkdir -p benchmarks/recipe_study "$WORK"

evaluate() {  # CHECKPOINT JSON [python -m metaug_release evaluate options]
    local ckpt=$1 json=$2 folder
    shift 2
    folder=$WORK/$(basename "$json" .json)
    metaug-export "$ckpt" "$folder" --default-layer fc --truncate-after fc --dtype float16 > /dev/null
    python -m metaug_release evaluate --model "$folder" --data "$DATA" -o "$folder-features" \
        --report "$json" --threads 2 --no-cluster --quiet "$@" >> "$WORK/eval.log" 2>&1
}

echo "[$NAME] 1/4 final checkpoint"
evaluate "$RUN/checkpoints/last.pt" "benchmarks/recipe_study/$NAME.json"
POINTS=()
for snap in "$@"; do
    step=$(python -c "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['step'])" "$snap")
    echo "[$NAME] 2/4 intermediate checkpoint at step $step"
    evaluate "$snap" "benchmarks/recipe_study/$NAME-step$step.json" --no-probe
    POINTS+=(--point "benchmarks/recipe_study/$NAME-step$step.json")
done
echo "[$NAME] 3/4 row, RESULTS.md section, plot"
python -m metaug_release study row --name "$NAME" --recipe "$RECIPE" --eval "benchmarks/recipe_study/$NAME.json" \
    ${POINTS[@]+"${POINTS[@]}"} > /dev/null
echo "[$NAME] 4/4 committed resume state $STATE"
metaug-compact-state "$RUN/checkpoints/last.pt" "$STATE"
cp "$RUN/log.jsonl" "$RUN/config.json" "$(dirname "$STATE")/"
du -b "$STATE"/* "$(dirname "$STATE")"/log.jsonl | sort -n
# The committed state must fit the campaign's 30 MB per leg (benchmarks/CAMPAIGN.md). A model too
# big for it (alexnet32 width 1.0: 75 MB in float16) keeps only its log and config in the
# repository; its state moves beside the full checkpoint in $RUN (git-ignored), which still resumes
# exactly on this machine, and
# tests/release/test_recipe_study.py checks that such a candidate really cannot fit.
STATE_BYTES=$(du -cb "$STATE"/* | tail -1 | cut -f1)
if [ "$STATE_BYTES" -gt 30000000 ]; then
    rm -rf "$RUN/compact-state" && mv "$STATE" "$RUN/compact-state"
    echo "[$NAME] state of $STATE_BYTES bytes is over the 30 MB budget: moved to $RUN/compact-state (not committed)"
fi
