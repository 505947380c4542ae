#!/usr/bin/env bash
# Every CPU benchmark in one go, on an otherwise idle machine; results land in benchmarks/results/.
#   bash benchmarks/run_cpu.sh 2>&1 | tee benchmarks/results/cpu_log.txt
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== default run: python train.py (time to val loss 2.0)"
python benchmarks/time_to_target.py --target 2.0 --rounds 1 --no-peer --name default_run
echo "== experiment=cpu_fast (time to val loss 1.88, against nanoGPT's CPU recipe)"
python benchmarks/time_to_target.py experiment=cpu_fast --target 1.88
echo "== training throughput, the TinyGPT notebook's size"
python benchmarks/bench_training.py --sizes notebook --steps 200 --warmup 40 --out training_notebook
echo "== training throughput, baby size (batch 4 on CPU)"
python benchmarks/bench_training.py --sizes baby --steps 30 --warmup 8 --peer-rounds 0 --tax-rounds 0 \
  --out training_baby
echo "== MoE"
python benchmarks/bench_moe.py
echo "== decoding"
python benchmarks/bench_decoding.py
echo "== scale: train.py on 1 MB, 200 MB and 1 GB texts (generated in a temporary directory)"
python benchmarks/bench_scale.py
