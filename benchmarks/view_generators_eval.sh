#!/usr/bin/env bash
# Evaluate the rows of a view-generator comparison run (benchmarks/view_generators_train.sh) on
# the CPU with the project's own evaluator, and keep the records the table is built from:
#
#   bash benchmarks/view_generators_eval.sh RUN_DIR TAG
#
# RUN_DIR holds one folder per row (<row>/export, <row>/log.jsonl) and vae/config.json (or
# back/vae-config.json); TAG names the result folder benchmarks/view_generators/TAG/. Rows whose
# result JSON exists are skipped. Needs the extracted CIFAR-10 folder (DATA, default
# /tmp/cifar/cifar10: tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar).
set -euo pipefail
RUN=$1
TAG=$2
DATA=${DATA:-/tmp/cifar/cifar10}
ROWS=${ROWS:-"oucl idaa a2-perturb a2-alpha0"}
DEST=benchmarks/view_generators/$TAG
mkdir -p "$DEST"
for f in "$RUN/vae/config.json" "$RUN/back/vae-config.json"; do
    [ -f "$f" ] && cp "$f" "$DEST/vae-config.json"
done
for r in $ROWS; do
    [ -d "$RUN/$r/export" ] || { echo "no export for $r in $RUN"; continue; }
    cp "$RUN/$r/log.jsonl" "$DEST/$r.log.jsonl"
    cp "$RUN/$r/config.json" "$DEST/$r.config.json"
    if [ ! -f "$DEST/$r.json" ]; then
        python -m metaug_release evaluate --model "$RUN/$r/export" --data "$DATA" -o "/tmp/vg-eval/$TAG/$r" \
            --report "$DEST/$r.json" --layers conv --no-cluster --threads "${THREADS:-2}" --quiet
    fi
done
python -m metaug_release view-generators "$TAG"
