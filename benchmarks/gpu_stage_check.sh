#!/usr/bin/env bash
# The GPU-stage check of issue 17, prepared for a GPU machine (a few minutes on one H100/H200):
# the 0.5B default shape and the LLaVA-1.5-7B shape, every change alone and together, then the
# shared-prefix table for comparison with the README's earlier figures. Random weights.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
for arch in llava-interleave-qwen-0.5b llava-1.5-7b; do
  python benchmarks/bench_gpu_stage.py --arch "$arch" --images 64 --side 480 \
      --batch-images 16 --model-batch-size 64 --repeats 2 --methods q_debias compare2score
done
python benchmarks/bench_prefix_sharing.py --arch llava-1.5-7b --images 64 \
    --batch-images 16 --model-batch-size 32 --max-tokens 65536 --repeats 2
