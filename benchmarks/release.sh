#!/usr/bin/env bash
# The release pipeline of the first CIFAR-10 models (issue #5), after the two training runs:
#
#   metaug-train --config metaug_training/recipes/cifar10-release-metaug.json &   # both side by side,
#   metaug-train --config metaug_training/recipes/cifar10-release-cmc.json &      # one core each
#   wait
#   bash benchmarks/release.sh
#
# 1. evaluates the MetAug run, the CMC run (equal budget) and the random-init floor of the same
#    architecture with python -m metaug_release evaluate (k-NN, fast probe, k-means; conv and fc);
# 2. turns the measurements into card-metrics files (python -m metaug_release cards);
# 3. exports hub/cifar10-conv (truncated after conv) and hub/cifar10-fc (truncated after fc) from
#    the MetAug checkpoint, cards rendered from metaug_training/model_cards/encoder_card.md;
# 4. checks both folders: metaug-push --dry-run, and python -m metaug_release reproduce re-measures
#    the cards' k-NN numbers through metaug-extract (within 0.3 points).
#
# Environment: DATA (CIFAR-10 folder with train/ and test/; default: ../shared/data archive
# extracted to /tmp/cifar), WORK (feature folders; default /tmp/metaug-release); for a rehearsal
# on a stand-in run: METAUG_RUN, CMC_RUN, OUT (default benchmarks/release), HUB (default hub).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-/tmp/cifar/cifar10}
WORK=${WORK:-/tmp/metaug-release}
OUT=${OUT:-benchmarks/release}
HUB=${HUB:-hub}
METAUG_RUN=${METAUG_RUN:-runs/cifar10-release-metaug/full}
CMC_RUN=${CMC_RUN:-runs/cifar10-release-cmc/full}
FLOOR_WIDTH=$(python -c "import json; print(json.load(open('metaug_training/recipes/cifar10-release-metaug.json'))['model']['width'])")

if [ ! -d "$DATA/train" ]; then
    mkdir -p /tmp/cifar && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar
    DATA=/tmp/cifar/cifar10
fi
mkdir -p "$OUT" "$WORK"

echo "[release] 1/4 evaluation (three jobs, one torch thread each)"
python -m metaug_release evaluate --model "$METAUG_RUN/export" --data "$DATA" -o "$WORK/metaug" \
    --report "$OUT/metaug.json" --quiet --reuse > "$WORK/metaug.log" 2>&1 &
p1=$!
python -m metaug_release evaluate --model "$CMC_RUN/export" --data "$DATA" -o "$WORK/cmc" \
    --report "$OUT/cmc.json" --quiet --reuse > "$WORK/cmc.log" 2>&1 &
p2=$!
python -m metaug_release evaluate --random-init "$FLOOR_WIDTH" --data "$DATA" -o "$WORK/floor" \
    --report "$OUT/floor.json" --quiet --reuse > "$WORK/floor.log" 2>&1 &
p3=$!
wait $p1; wait $p2; wait $p3   # set -e: a failed job stops here (its log is in $WORK)

echo "[release] 2/4 card metrics"
python -m metaug_release cards --metaug-eval "$OUT/metaug.json" --cmc-eval "$OUT/cmc.json" \
    --floor-eval "$OUT/floor.json" --metaug-run "$METAUG_RUN" --cmc-run "$CMC_RUN" \
    --recipe metaug_training/recipes/cifar10-release-metaug.json -o "$OUT"

echo "[release] 3/4 export"
for layer in conv fc; do
    metaug-export "$METAUG_RUN/checkpoints/last.pt" "$HUB/cifar10-$layer" --default-layer "$layer" \
        --truncate-after "$layer" --card-metrics "$OUT/card-$layer.json"
done

echo "[release] 4/4 checks"
for layer in conv fc; do   # the repo the built-in alias cifar10-$layer points to
    repo=$(python -c "from metaug_features.hub import MODEL_ALIASES; print(MODEL_ALIASES['cifar10-$layer'][0])")
    metaug-push "$HUB/cifar10-$layer" --repo-id "$repo" --dry-run
done
python -m metaug_release reproduce "$HUB/cifar10-conv" "$HUB/cifar10-fc" --data "$DATA" \
    -o "$WORK/reproduce" --report "$OUT/reproduce.json"
if [ "$HUB" = hub ]; then   # the shipped folders now come from this record (tests/release/test_release_consistency.py)
    python -m metaug_release current-release write --record "$OUT" --evaluation "$OUT/metaug.json" \
        --recipe metaug_training/recipes/cifar10-release-metaug.json --evaluated-folder "$HUB/cifar10-fc"
fi
du -sh "$HUB/cifar10-conv" "$HUB/cifar10-fc"
