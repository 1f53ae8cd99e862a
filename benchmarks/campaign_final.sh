#!/usr/bin/env bash
# The last leg's full evaluation of the campaign's final model (issue #18; benchmarks/CAMPAIGN.md).
# Run it once the schedule is complete (the campaign's last released row is at the planned epoch):
#
#   bash benchmarks/campaign_final.sh LEG [CAMPAIGN]      # or CAMPAIGN=2 bash benchmarks/campaign_final.sh LEG
#
# CAMPAIGN (default 1) picks the campaign of metaug_release.campaign.CAMPAIGNS; its records
# folder OUT is `python -m metaug_release campaign paths`' OUTDIR (campaign 1: benchmarks/campaign, campaign 2:
# benchmarks/campaign/c2).
#
# 1. the paper-protocol linear probe (docs/METHODS.md section 7: 60 epochs of SGD on one linear layer over the
#    frozen encoder, train-time augmentation, mean test top-1 of the last 5 epochs) on conv and fc
#    of the shipped hub/cifar10-fc -> $OUT/paper-probe-{conv,fc}.json. 39-48 minutes per layer on
#    the 2-core CPU in campaign 1, 65-70 in campaign 2; a report already there is kept (delete it to re-run);
# 2. t-SNE of the test features (conv, fc) -> $OUT/embedding-{conv,fc}.png and the
#    positive-vs-negative similarity histograms similarity-{conv,fc}.png;
# 3. python -m metaug_release campaign final: the leg's evaluation-only row in campaign.jsonl (no epochs: the schedule
#    is complete), the plot, the cards with the paper probe, RESULTS.md's final table;
# 4. the shipped cards re-rendered from those files (python -m metaug_release campaign recard: the same renderer as
#    metaug-export, no checkpoint needed; the weights are not touched, which the script checks),
#    metaug-push --dry-run, the README's released-models section.
#
# Environment: DATA (CIFAR-10 folder with train/ and test/; default: the shared archive extracted
# to /tmp/cifar), WORK (feature folders; default /tmp/metaug-campaign), THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
LEG=${1:?usage: bash benchmarks/campaign_final.sh LEG [CAMPAIGN]}
CAMPAIGN=${2:-${CAMPAIGN:-1}}
PATHS=$(python -m metaug_release campaign paths --campaign "$CAMPAIGN" --leg "$LEG")   # fails (set -e) on a bad campaign
eval "$PATHS"
DATA=${DATA:-/tmp/cifar/cifar10}
WORK=${WORK:-/tmp/metaug-campaign}
THREADS=${THREADS:-2}
OUT=$OUTDIR
if [ ! -d "$DATA/train" ]; then
    mkdir -p /tmp/cifar && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar
    DATA=/tmp/cifar/cifar10
fi
mkdir -p "$OUT" "$WORK"
WEIGHTS_BEFORE=$(sha256sum hub/cifar10-conv/model.safetensors hub/cifar10-fc/model.safetensors)

for layer in conv fc; do
    report=$OUT/paper-probe-$layer.json
    if [ -f "$report" ]; then
        echo "[final] 1/4 paper probe $layer: $report exists, kept"
        continue
    fi
    echo "[final] 1/4 paper probe $layer (40-70 minutes)"
    metaug-eval --threads "$THREADS" paper-probe --model hub/cifar10-fc --train-images "$DATA/train" \
        --test-images "$DATA/test" --layer "$layer" --average-last 5 --report "$report.tmp" --quiet
    mv "$report.tmp" "$report"
done

echo "[final] 2/4 t-SNE plots"
for layer in conv fc; do
    feats=$WORK/final-c$CAMPAIGN-test-$layer
    [ -f "$feats/features.npy" ] || metaug-extract "$DATA/test" --model hub/cifar10-fc --layer "$layer" \
        --output "$feats" --quiet
    plots=$WORK/final-c$CAMPAIGN-plot-$layer
    metaug-eval --threads "$THREADS" plot --features "$feats" --out-dir "$plots" --method tsne \
        --report "$plots.json" --quiet
    cp "$plots/embedding.png" "$OUT/embedding-$layer.png"
    cp "$plots/similarity_hist.png" "$OUT/similarity-$layer.png"
done

echo "[final] 3/4 campaign row, cards, RESULTS.md"
python -m metaug_release campaign final --campaign "$CAMPAIGN" --leg "$LEG" --paper-probe "$OUT/paper-probe-conv.json" "$OUT/paper-probe-fc.json"

echo "[final] 4/4 cards re-rendered, dry-run push, README"
python -m metaug_release campaign recard --campaign "$CAMPAIGN"
[ "$WEIGHTS_BEFORE" = "$(sha256sum hub/cifar10-conv/model.safetensors hub/cifar10-fc/model.safetensors)" ]
for layer in conv fc; do
    repo=$(python -c "from metaug_features.hub import MODEL_ALIASES; print(MODEL_ALIASES['cifar10-$layer'][0])")
    metaug-push "hub/cifar10-$layer" --repo-id "$repo" --dry-run
done
python -m metaug_release campaign readme --campaign "$CAMPAIGN"   # its last released leg
