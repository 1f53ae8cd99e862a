#!/usr/bin/env bash
# Everything a training-campaign leg does after its run has stopped (benchmarks/CAMPAIGN.md):
#
#   bash benchmarks/campaign_leg.sh LEG
#
# 1. export the final checkpoint as the release candidate: the fc folder exactly as it would ship
#    (truncated after fc, float16 weights: a leg may add at most 30 MB to the repository);
# 2. evaluate that folder on the 10,000 test images (metaug-release evaluate: weighted k-NN
#    k=200/20, fast linear probe and k-means on conv and fc) -> benchmarks/campaign/legLEG.json (a
#    metaug-eval report), so
#    the cards carry the numbers of the shipped weights themselves (the conv folder holds the same
#    float16 conv weights: identical conv features);
# 3. append the leg's row to benchmarks/campaign.jsonl and redraw benchmarks/campaign.png
#    (metaug-release campaign row);
# 4. if it beats the current release (weighted k-NN k=200 and fast probe on conv both higher than
#    the evaluation benchmarks/current_release.json names), re-release: card files (metaug-release
#    campaign cards),
#    hub/cifar10-conv and hub/cifar10-fc (float16), a check that hub/cifar10-fc is the evaluated
#    file, metaug-push --dry-run, metaug-release reproduce within 0.3 points,
#    current_release.json updated, the README's released-models section rewritten (metaug-release
#    campaign readme);
# 5. write the committed resume state runs/cifar10-alexnet32-metaug/state (metaug-compact-state,
#    reusing the release folder's tensors), copy the run's log and config next to it, and print
#    what the leg adds to the repository.
#
# Environment: DATA (CIFAR-10 folder with train/ and test/; default: the shared archive extracted
# to /tmp/cifar), WORK (feature folders; default /tmp/metaug-campaign).
set -euo pipefail
cd "$(dirname "$0")/.."
LEG=${1:?usage: bash benchmarks/campaign_leg.sh LEG}
RUN=runs/cifar10-alexnet32-metaug/full
STATE=runs/cifar10-alexnet32-metaug/state
CKPT=$RUN/checkpoints/last.pt
DATA=${DATA:-/tmp/cifar/cifar10}
WORK=${WORK:-/tmp/metaug-campaign}
EVAL=benchmarks/campaign/leg$LEG.json
if [ ! -d "$DATA/train" ]; then
    mkdir -p /tmp/cifar && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar
    DATA=/tmp/cifar/cifar10
fi
mkdir -p benchmarks/campaign "$WORK"

CANDIDATE=$WORK/candidate-leg$LEG
echo "[leg $LEG] 1/5 export $CKPT -> $CANDIDATE"
metaug-export "$CKPT" "$CANDIDATE" --default-layer fc --truncate-after fc --dtype float16

echo "[leg $LEG] 2/5 evaluation (log: $WORK/eval.log)"
metaug-release evaluate --model "$CANDIDATE" --data "$DATA" -o "$WORK/eval-leg$LEG" \
    --report "$EVAL" --threads 2 --quiet > "$WORK/eval.log" 2>&1

echo "[leg $LEG] 3/5 campaign row"
metaug-release campaign row --leg "$LEG" --eval "$EVAL" > /dev/null

BEATS=$(python - "$EVAL" <<'EOF'
import json, sys
from metaug_training.release.records import load_evaluation
new = load_evaluation(sys.argv[1])
cur = load_evaluation(json.load(open("benchmarks/current_release.json"))["evaluation"])
get = lambda e: (e["conv"].knn[200], e["conv"].probe)
print("yes" if all(n > c for n, c in zip(get(new), get(cur))) else "no")
EOF
)
echo "[leg $LEG] 4/5 beats the current release: $BEATS"
if [ "$BEATS" = yes ]; then
    metaug-release campaign cards --leg "$LEG" > /dev/null
    metaug-export "$CKPT" hub/cifar10-conv --default-layer conv --truncate-after conv --dtype float16 \
        --card-metrics benchmarks/campaign/card-conv.json
    metaug-export "$CKPT" hub/cifar10-fc --default-layer fc --truncate-after fc --dtype float16 \
        --card-metrics benchmarks/campaign/card-fc.json
    cmp "$CANDIDATE/model.safetensors" hub/cifar10-fc/model.safetensors   # the evaluated weights ship
    for layer in conv fc; do
        repo=$(python -c "from metaug_features.hub import MODEL_ALIASES; print(MODEL_ALIASES['cifar10-$layer'][0])")
        metaug-push "hub/cifar10-$layer" --repo-id "$repo" --dry-run
    done
    metaug-release reproduce hub/cifar10-conv hub/cifar10-fc --data "$DATA" \
        -o "$WORK/reproduce" --report benchmarks/campaign/reproduce.json
    python - "$EVAL" <<'EOF'
import json, sys
from pathlib import Path
record = {"_comment": json.load(open("benchmarks/current_release.json"))["_comment"], "record": "benchmarks/campaign",
          "evaluation": sys.argv[1], "evaluated_folder": "hub/cifar10-fc",
          "recipe": "metaug_training/recipes/cifar10-alexnet32-metaug.json"}
tmp = Path("benchmarks/current_release.json.tmp")
tmp.write_text(json.dumps(record, indent=2) + "\n")
tmp.replace("benchmarks/current_release.json")
EOF
    metaug-release campaign row --leg "$LEG" --eval "$EVAL" --released > /dev/null
    metaug-release campaign readme --leg "$LEG"   # README's released-models section
    REUSE="--reuse hub/cifar10-fc"
else
    REUSE=""
fi

echo "[leg $LEG] 5/5 committed resume state $STATE"
# shellcheck disable=SC2086
metaug-compact-state "$CKPT" "$STATE" $REUSE
cp "$RUN/log.jsonl" "$RUN/config.json" runs/cifar10-alexnet32-metaug/
du -b "$STATE"/* runs/cifar10-alexnet32-metaug/log.jsonl hub/cifar10-conv/* hub/cifar10-fc/* | sort -n
