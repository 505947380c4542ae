#!/usr/bin/env bash
# Everything GPU-side in one call, for the few minutes a GPU is lent (about 6 minutes on an
# H100/H200, most of it the time-to-target run). Needs the data cache: run it from the
# repository root with data/tinyshakespeare.txt present (the lent machine has no internet).
#   bash benchmarks/gpu_check.sh 2>&1 | tee benchmarks/results/gpu_log.txt
# Checks, then times:
#   1. bf16-mixed training with model.compile=true runs and lowers the loss (50 steps), and so
#      does 16-mixed, with its real GradScaler (the one path CPU tests cannot take);
#   2. compiled cached decoding gives the eager path's greedy tokens on the GPU;
#   3. training throughput and MFU, dense and MoE, the notebook's and baby sizes (bench_training.py);
#   4. MoE vs dense train step and the MoE layer vs HF Mixtral's (bench_moe.py; HF needs
#      transformers, in the dev extra, and its rows are skipped without it);
#   5. wall time to val loss 1.47 with nanoGPT's recipe (experiment=nanogpt_baby, compiled).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: no CUDA GPU visible to torch; benchmarks/gpu_check.sh needs one" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

check_run() {  # run directory, precision: it trained in that precision and lowered the loss
  python - "$1" "$2" <<'PY'
import json, sys
from pathlib import Path
run, precision = Path(sys.argv[1]), sys.argv[2]
summary = json.loads((run / "summary.json").read_text())
config = (run / ".hydra" / "config.yaml").read_text()
assert f"precision: {precision}" in config, f"the run did not train in {precision}"
assert summary["final_val_loss"] < 4.0, f"loss did not go down: {summary}"
print(f"ok: {precision}, val loss {summary['final_val_loss']:.3f} after {summary['steps']} steps")
PY
}
quiet=("~callbacks.attention_heatmap" "~callbacks.metric_plots")

echo "== 1. bf16-mixed + compile, then 16-mixed: 50 training steps each"
python train.py trainer=gpu model.compile=true trainer.max_steps=50 trainer.val_check_interval=50 \
  "${quiet[@]}" hydra.run.dir="$work/smoke" | tail -1
check_run "$work/smoke" bf16-mixed
python train.py trainer=gpu trainer.precision=16-mixed trainer.max_steps=50 \
  trainer.val_check_interval=50 "${quiet[@]}" hydra.run.dir="$work/fp16" | tail -1
check_run "$work/fp16" 16-mixed

echo "== 2. compiled cached decoding equals eager on the GPU"
python - "$work/smoke/checkpoints/last.ckpt" <<'PY'
import sys
from tinygpt.checkpoint import load_model
from tinygpt.generation import generate_greedy
model = load_model(sys.argv[1]).to("cuda")
eager = generate_greedy(model, "ROMEO:", 100, compile=False)
compiled = generate_greedy(model, "ROMEO:", 100, compile=True)
assert eager == compiled, "compiled decoding chose other tokens than eager decoding"
print("ok: compiled and eager greedy decoding agree on 100 tokens")
PY

echo "== 3. training throughput and MFU"
python benchmarks/bench_training.py --device cuda --steps 100 --warmup 20 --peer-rounds 0 --tax-rounds 0 \
  --out training_gpu

echo "== 4. MoE vs dense"
python benchmarks/bench_moe.py --device cuda --out benchmarks/results/moe_gpu.json

echo "== 5. time to val loss 1.47, nanoGPT's shakespeare_char recipe, compiled"
python benchmarks/time_to_target.py experiment=nanogpt_baby trainer=gpu model.compile=true \
  --target 1.47 --device cuda --rounds 1 --no-peer --name time_to_target_gpu_nanogpt_baby
