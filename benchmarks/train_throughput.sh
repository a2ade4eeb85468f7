#!/bin/bash
# Steps/s of the real training loop (`cqrnet_jax.main`, :cpu de-blocker, 40 steps from scratch in a
# throw-away workdir) under each memory allocator and input-pipeline backend.
#
#   CQRNET_DATA_DIR=DATA bash benchmarks/train_throughput.sh
#
# Measured 2026-11-30 on the 2-core CPU, nothing else running (jax 0.10.2; tcmalloc from Debian's
# libtcmalloc-minimal4), steps/s at steps 20 / 30 / 40:
#   glibc malloc, tf.data      0.20 0.23 0.23
#   tcmalloc,     tf.data      0.28 0.29 0.32
#   tcmalloc,     NumPy + PIL  0.37 0.36 0.33   (identical losses: the backends give the same batches)
# glibc serves XLA:CPU's large per-step buffers with fresh mmap/munmap each step (strace: ~120
# mmap + 120 munmap a second), so the kernel zeroes pages all the time (top: ~100 % system time);
# tcmalloc keeps them. benchmarks/deblock_step.py alone: 2.80 s/step (7.0 s system time) under
# glibc, 2.44 s/step (1.3 s) under tcmalloc. The NumPy backend also keeps TensorFlow's thread pools
# out of the training process, which matters on 2 cores.
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
