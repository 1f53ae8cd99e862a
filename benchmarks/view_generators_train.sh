#!/usr/bin/env bash
# The IDAA / A2 comparison of issue #6: on a lent GPU as one command of the device tool (rows side
# by side), or on the CPU with DEV=cpu SEQUENTIAL=1 THREADS=2 VAE_TIMEOUT=3000 LIMIT_S=99999:
#
#   base OUCL  vs  +IDAA  vs  +A2 perturb (VAE generator)  vs  +A2 with alpha = 0 (control)
#
# all four from the same recipe (cifar10-oucl: alexnet32 width 0.5, views l/ab/ori, batch 64,
# lr 0.03) with a cosine schedule over the same number of epochs and the same seed, after a VAE
# trained here first. The epoch budget is EPOCHS, or, when unset, chosen from the measured speed
# of the slowest row so that all four finish inside the command (side by side on the GPU); every row
# also carries a wall-clock deadline as a safety net, and the table reports the epochs each
# row reached. Evaluation happens afterwards on the CPU (benchmarks/view_generators_eval.sh).
#
# Expects: data/cifar10-jpeg.tar.gz (a git-ignored copy of ../shared/data's archive, which the
# device tool carries; ../shared/data's own is used when the copy is absent),
# $OUT (the device tool's output folder). Total wall time: about LIMIT_S seconds.
set -u
export PYTHONUNBUFFERED=1
LIMIT_S=${LIMIT_S:-540}
DEV=${DEV:-cuda}                # cpu for a dry run of this script
DATA_LIMIT=${DATA_LIMIT:-0}     # 0 = all 50,000 training images
PROBE_STEPS=${PROBE_STEPS:-300}
VAE_EPOCHS=${VAE_EPOCHS:-5}
VAE_TIMEOUT=${VAE_TIMEOUT:-150}   # seconds; a CPU run needs about 900
OUT=${OUT:-/tmp/vg-out}
THREADS=${THREADS:-3}           # torch threads per row
SEQUENTIAL=${SEQUENTIAL:-0}     # 1: one row after the other (a CPU run), else side by side
T0=$(date +%s)
W=${W:-/tmp/vg}
rm -rf "$W"
mkdir -p "$W/pkgs" "$OUT"
# Run from the tree (no build step): the packages under their import names, the checkout's
# release tooling (metaug_release, never installed) included.
for pkg in metaug_features metaug_cli metaug_training metaug_release; do
    ln -sfn "$PWD/$pkg" "$W/pkgs/$pkg"
done
export PYTHONPATH="$W/pkgs"
PY=python3
elapsed() { echo $(( $(date +%s) - T0 )); }
log() { echo "[$(elapsed)s] $*" | tee -a "$W/driver.log"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$W/gpu.txt" 2>&1
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" | tee -a "$W/gpu.txt"
(nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 10 || sleep 100000) > "$W/gpu_util.csv" 2>&1 &
UTIL_PID=$!

DATA=data/cifar10-jpeg.tar.gz
[ -f "$DATA" ] || DATA=../shared/data/cifar10-jpeg.tar.gz
COMMON=(data.path=$DATA data.cache_dir=$W/cache data.num_workers=8 optim.schedule=cosine run.seed=0 run.device=$DEV data.limit=$DATA_LIMIT
        run.num_threads=$THREADS run.log_every=100 run.ckpt_every=1000000 run.quiet=true a2.calibration_model=cifar10-conv)

# 0. decode the training set once into the cache every row reads
$PY - "${COMMON[@]}" <<'EOF' 2>&1 | tee -a "$W/driver.log"
import sys
from metaug_training.config import load_config
from metaug_training.distributed import DistContext
from metaug_training.trainer import load_data
import torch
data = load_data(load_config("cifar10-oucl", sys.argv[1:]), DistContext(device=torch.device("cpu")))
print("decoded", len(data), "training images")
EOF

# 1. the VAE (5 epochs, PSNR on the test split)
log "VAE"
timeout ${VAE_TIMEOUT:-150} $PY -m metaug_cli.train_vae $DATA "$W/vae" --epochs $VAE_EPOCHS --device $DEV --limit $DATA_LIMIT > "$W/vae.log" 2>&1
tail -3 "$W/vae.log"
[ -f "$W/vae/config.json" ] || { log "VAE failed"; cat "$W/vae.log"; }

declare -A RECIPE=([oucl]=cifar10-oucl [idaa]=cifar10-oucl-idaa [a2-perturb]=cifar10-oucl-a2-perturb [a2-alpha0]=cifar10-oucl-a2-perturb)
declare -A EXTRA=([oucl]="" [idaa]="idaa.vae=$W/vae" [a2-perturb]="a2.vae=$W/vae" [a2-alpha0]="a2.vae=$W/vae a2.alpha=0")
ROWS=(oucl idaa a2-perturb a2-alpha0)

launch() {  # launch ROW EPOCHS OUTDIR [more overrides...]
    local row=$1 epochs=$2 out=$3; shift 3
    $PY -m metaug_cli.train --config "${RECIPE[$row]}" "${COMMON[@]}" ${EXTRA[$row]} optim.epochs=$epochs \
        run.out_dir=$out "$@" > "$out.stdout" 2>&1 &
}

# 2. speed probe: all rows side by side for PROBE_STEPS steps, to size the budget (skipped
#    when EPOCHS is given)
if [ -z "${EPOCHS:-}" ]; then
log "probe"
mkdir -p "$W/probe"
for r in "${ROWS[@]}"; do launch "$r" 100 "$W/probe/$r" run.max_steps=$PROBE_STEPS run.export=false; done
wait $(jobs -p | grep -v "^$UTIL_PID$") 2>/dev/null
# The budget: what the slowest row finishes in the time left (python -m metaug_release
# view-generators-budget; the measured rates go to stderr).
EPOCHS=$($PY -m metaug_release view-generators-budget "$W/probe" "${ROWS[@]}" --limit-s "$LIMIT_S" \
    --spent-s "$(elapsed)" --images "$DATA_LIMIT")
log "rates above; budget $EPOCHS epochs"
fi
log "budget: $EPOCHS epochs"

# 3. the rows, side by side, same budget; the deadline is only a safety net
DEADLINE=$(awk -v a="$LIMIT_S" -v b="$(elapsed)" 'BEGIN { printf "%.2f", (a - b - 45) / 60 }')  # minutes, not rounded down
for r in "${ROWS[@]}"; do
    launch "$r" "$EPOCHS" "$W/$r" run.stop_after_minutes=$DEADLINE
    if [ "$SEQUENTIAL" = 1 ]; then wait $(jobs -p | grep -v "^$UTIL_PID$") 2>/dev/null; log "$r done"; fi
done
wait $(jobs -p | grep -v "^$UTIL_PID$") 2>/dev/null
log "rows done"
kill $UTIL_PID 2>/dev/null

# 4. bring back: each export as float16 (one tar per row, < 16 MiB), logs and the VAE report
for r in "${ROWS[@]}"; do
    mkdir -p "$W/back/$r"
    cp "$W/$r/log.jsonl" "$W/$r/config.json" "$W/$r.stdout" "$W/back/$r/" 2>/dev/null
    $PY - "$W/$r/export" "$W/back/$r/export" <<'EOF'
import sys
from metaug_features import load_encoder
from metaug_features.model_io import save_pretrained
from pathlib import Path
src, dst = sys.argv[1:]
card = (Path(src) / "README.md").read_text()
save_pretrained(load_encoder(src), dst, card=card, weights_dtype="float16")
EOF
    tar -C "$W/back" -cf "$OUT/row-$r.tar" "$r"
done
cp "$W/vae/config.json" "$W/back/vae-config.json" 2>/dev/null
tar -C "$W" --exclude='*.pt' -czf "$OUT/meta.tar.gz" driver.log gpu.txt gpu_util.csv vae.log $( [ -d "$W/probe" ] && echo probe) back/vae-config.json
ls -la "$OUT"
log "end"
