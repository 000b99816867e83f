#!/usr/bin/env bash
# The GPU check (issue 17), at most 5 minutes on one GPU machine:
#   1. the tests marked `gpu` (tests/test_gpu.py): every op of the flow's training step on the
#      GPU with soft placement off, XLA there, the CPU's weights in float64 to 1e-9, the DLGM;
#   2. benchmarks/gpu_check.py: K = 32 step times at D = 2..1024 and one DLGM epoch's images/s,
#      appended to benchmarks/RESULTS.md and benchmarks/results/gpu_check.json.
# Needs a Python with tfnf's dependencies and a GPU build of TensorFlow, e.g.
#   pip install -e ".[test]" "tensorflow[and-cuda]"
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); print(g); assert g, 'TensorFlow sees no GPU'"
timeout 150 python -m pytest -q -m gpu tests/test_gpu.py
timeout 140 python benchmarks/gpu_check.py "$@"
