#!/bin/bash
# Steps/s of the real training loop (`cqrnet_jax.main`, :cpu de-blocker, 40 steps from scratch in a
# throw-away workdir) under each memory allocator and input-pipeline backend.
#
#   CQRNET_DATA_DIR=DATA bash benchmarks/train_throughput.sh
#
# glibc serves XLA:CPU's large per-step buffers with fresh mmap/munmap each step, so the kernel
# zeroes pages all the time; tcmalloc keeps them. The NumPy backend also keeps TensorFlow's thread
# pools out of the training process. Measured: experiments/results/train_throughput.txt.
set -euo pipefail
TCMALLOC=${TCMALLOC:-/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
run() {
  local name=$1 preload=$2; shift 2
  local workdir
  workdir=$(mktemp -d)
  LD_PRELOAD=$preload python -m cqrnet_jax.main --config="$ROOT/configs/deblock.py:cpu" \
    --workdir="$workdir" --config.num_steps=40 --config.log_every=10 \
    --config.checkpoint_every=1000 --config.eval_every=0 "$@" 2>&1 |
    tr '\r' '\n' | grep '^step' | sed "s/^/$name: /"
  rm -rf "$workdir"
}
run "glibc, tf.data" "" --config.data.backend=tf
if [ -e "$TCMALLOC" ]; then
  run "tcmalloc, tf.data" "$TCMALLOC" --config.data.backend=tf
  run "tcmalloc, numpy" "$TCMALLOC" --config.data.backend=numpy
else
  echo "no $TCMALLOC (Debian/Ubuntu: apt-get install libtcmalloc-minimal4); skipped tcmalloc"
fi
