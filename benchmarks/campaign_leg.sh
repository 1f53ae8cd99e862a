#!/usr/bin/env bash
# Everything a training-campaign leg does after its run has stopped (benchmarks/CAMPAIGN.md):
#
#   bash benchmarks/campaign_leg.sh LEG [CAMPAIGN]       # or CAMPAIGN=2 bash benchmarks/campaign_leg.sh LEG
#
# CAMPAIGN (default 1) picks the campaign of metaug_release.campaign.CAMPAIGNS: its recipe,
# its run folder (RUN: the trainer's full/, STATE: the committed state/) and where its records go
# (campaign 1: benchmarks/campaign/legLEG.json, card-*.json; campaign 2: benchmarks/campaign/c2/),
# as `python -m metaug_release campaign paths --campaign N --leg LEG` prints them.
#
# 1. export the final checkpoint as the release candidate: the fc folder exactly as it would ship
#    (truncated after fc, float16 weights: a leg may add at most 30 MB to the repository);
# 2. evaluate that folder on the 10,000 test images (python -m metaug_release evaluate: weighted k-NN
#    k=200/20, fast linear probe and k-means on conv and fc) -> $EVAL (benchmarks/campaign/legLEG.json
#    for campaign 1; a metaug-eval report), so
#    the cards carry the numbers of the shipped weights themselves (the conv folder holds the same
#    float16 conv weights: identical conv features);
# 3. append the leg's row to benchmarks/campaign.jsonl and redraw benchmarks/campaign.png
#    (python -m metaug_release campaign row);
# 4. if it beats the current release (weighted k-NN k=200 and fast probe on conv both higher than
#    the evaluation benchmarks/current_release.json names), re-release: card files (python -m metaug_release
#    campaign cards),
#    hub/cifar10-conv and hub/cifar10-fc (float16), a check that hub/cifar10-fc is the evaluated
#    file, metaug-push --dry-run, python -m metaug_release reproduce within 0.3 points,
#    current_release.json updated, the README's released-models section rewritten (python -m metaug_release
#    campaign readme);
# 5. write the committed resume state $STATE (runs/cifar10-alexnet32-metaug/state; metaug-compact-state,
#    reusing the release folder's tensors), copy the run's log and config next to it, and print
#    what the leg adds to the repository.
#
# Environment: DATA (CIFAR-10 folder with train/ and test/; default: the shared archive extracted
# to /tmp/cifar), WORK (feature folders; default /tmp/metaug-campaign).
set -euo pipefail
cd "$(dirname "$0")/.."
LEG=${1:?usage: bash benchmarks/campaign_leg.sh LEG [CAMPAIGN]}
CAMPAIGN=${2:-${CAMPAIGN:-1}}
# RECIPE, RUN, STATE, COMMITTED, OUTDIR and EVAL of this campaign and leg (one definition: CAMPAIGNS).
PATHS=$(python -m metaug_release campaign paths --campaign "$CAMPAIGN" --leg "$LEG")   # fails (set -e) on a bad campaign
eval "$PATHS"
CKPT=$RUN/checkpoints/last.pt
DATA=${DATA:-/tmp/cifar/cifar10}
WORK=${WORK:-/tmp/metaug-campaign}
if [ ! -d "$DATA/train" ]; then
    mkdir -p /tmp/cifar && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar
    DATA=/tmp/cifar/cifar10
fi
mkdir -p "$OUTDIR" "$WORK"
TAG=leg$LEG
[ "$CAMPAIGN" = 1 ] || TAG=c$CAMPAIGN-leg$LEG

CANDIDATE=$WORK/candidate-$TAG
echo "[$TAG] 1/5 export $CKPT -> $CANDIDATE"
metaug-export "$CKPT" "$CANDIDATE" --default-layer fc --truncate-after fc --dtype float16

echo "[$TAG] 2/5 evaluation (log: $WORK/eval.log)"
python -m metaug_release evaluate --model "$CANDIDATE" --data "$DATA" -o "$WORK/eval-$TAG" \
    --report "$EVAL" --threads 2 --quiet > "$WORK/eval.log" 2>&1

echo "[$TAG] 3/5 campaign row"
python -m metaug_release campaign row --campaign "$CAMPAIGN" --leg "$LEG" --eval "$EVAL" --run "$RUN" > /dev/null

# The decision and its numbers (python -m metaug_release current-release beats; the numbers go to stderr).
BEATS=$(python -m metaug_release current-release beats "$EVAL")
echo "[$TAG] 4/5 beats the current release: $BEATS"
if [ "$BEATS" = yes ]; then
    python -m metaug_release campaign cards --campaign "$CAMPAIGN" --leg "$LEG" > /dev/null
    metaug-export "$CKPT" hub/cifar10-conv --default-layer conv --truncate-after conv --dtype float16 \
        --card-metrics "$OUTDIR/card-conv.json"
    metaug-export "$CKPT" hub/cifar10-fc --default-layer fc --truncate-after fc --dtype float16 \
        --card-metrics "$OUTDIR/card-fc.json"
    cmp "$CANDIDATE/model.safetensors" hub/cifar10-fc/model.safetensors   # the evaluated weights ship
    for layer in conv fc; do
        repo=$(python -c "from metaug_features.hub import MODEL_ALIASES; print(MODEL_ALIASES['cifar10-$layer'][0])")
        metaug-push "hub/cifar10-$layer" --repo-id "$repo" --dry-run
    done
    python -m metaug_release reproduce hub/cifar10-conv hub/cifar10-fc --data "$DATA" \
        -o "$WORK/reproduce" --report "$OUTDIR/reproduce.json"
    python -m metaug_release current-release write --record "$OUTDIR" --evaluation "$EVAL" --recipe "$RECIPE" \
        --evaluated-folder hub/cifar10-fc
    python -m metaug_release campaign row --campaign "$CAMPAIGN" --leg "$LEG" --eval "$EVAL" --run "$RUN" --released > /dev/null
    python -m metaug_release campaign readme --campaign "$CAMPAIGN" --leg "$LEG"   # README's released-models section
    REUSE="--reuse hub/cifar10-fc"
else
    REUSE=""
fi

echo "[$TAG] 5/5 committed resume state $STATE"
# shellcheck disable=SC2086
metaug-compact-state "$CKPT" "$STATE" $REUSE
cp "$RUN/log.jsonl" "$RUN/config.json" "$COMMITTED/"
du -b "$STATE"/* "$COMMITTED/log.jsonl" hub/cifar10-conv/* hub/cifar10-fc/* | sort -n
