#!/usr/bin/env bash
# One prepared GPU run: trains the paper-scale de-blocker for a wall budget, then evaluates it.
#
#   bash experiments/gpu_train.sh --prepare .gpu        # here, on CPU: data + wheels into .gpu/
#   bash experiments/gpu_train.sh OUTDIR [PACK]         # on the GPU machine (PACK: default .gpu)
#   bash experiments/gpu_train.sh --smoke OUTDIR [PACK] # the same path on CPU, tiny, < 3 minutes
#
# The GPU machine has jax, flax, optax, orbax, numpy, pillow, scikit-image, tensorboard but no
# TensorFlow, ml-collections or network: PACK/wheels brings ml-collections. OUTDIR receives the
# params (split to fit the device tool's 16 MiB files), eval.json, bench.json and train.log; the
# params are rewritten as training goes, so a run cut short still returns its last ones.
# Environment: GPU_BUDGET_S (wall seconds for this script, default 540), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"

if [[ "${1:-}" == "--prepare" ]]; then
    exec "$py" experiments/gpu_pack.py "${2:?usage: gpu_train.sh --prepare DIR}" "${@:3}"
fi
smoke=()
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=(--smoke)
    shift
fi
out="${1:?usage: gpu_train.sh [--smoke] OUTDIR [PACK]}"
pack="${2:-.gpu}"
mkdir -p "$out"

if ! "$py" -c "import ml_collections" 2>/dev/null; then
    shopt -s nullglob
    wheels=("$pack"/wheels/*.whl)
    if [[ ${#wheels[@]} -eq 0 ]]; then
        echo "error: ml_collections is missing and $pack/wheels has no wheels (run --prepare)" >&2
        exit 2
    fi
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/cqrnet_site "${wheels[@]}"
    export PYTHONPATH="/tmp/cqrnet_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
if [[ -d "$pack/data" ]]; then
    export CQRNET_DATA_DIR="$pack/data"
fi
set -o pipefail
"$py" experiments/gpu_train.py "${smoke[@]}" --out "$out" --budget-s "${GPU_BUDGET_S:-540}" \
    2>&1 | tee "$out/train.log"
