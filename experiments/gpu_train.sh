#!/usr/bin/env bash
# The paper-scale de-blocker in one short GPU allocation: train for a time budget with the rate
# decayed to 0 at its end, evaluate, and leave the results in OUTDIR. An allocation is described
# by three limits, each an option with a default: its wall time (--budget-s), the size of what
# goes in, this checkout plus a pack of data (--limit-mib, at --prepare), and the size of each
# file that comes back (--part-mib). With a GPU of your own, docs/training.md's "On a GPU"
# command is simpler.
#
#   bash experiments/gpu_train.sh --prepare PACK [--data-dir DATA] [--limit-mib 64]
#       before the allocation, with the data and a network: test sets, training images and wheels
#       into PACK (experiments/gpu_pack.py; .gpu in this repository is ignored by git)
#   bash experiments/gpu_train.sh [--budget-s 540] [--part-mib 15] OUTDIR [PACK]
#       on the GPU machine (PACK: default .gpu in this repository)
#   bash experiments/gpu_train.sh --smoke OUTDIR [PACK]
#       the same path on a CPU, tiny model, < 3 minutes
#
# --budget-s: wall seconds for the whole run, evaluation included (default 540).
# --limit-mib: what goes in, checkout plus PACK, at most this many MiB (default 64).
# --part-mib: the params are written in files of at most this many MiB (default 15; 0: one file).
# The GPU machine needs jax (CUDA build), flax, optax, orbax, numpy, pillow, scikit-image and
# tensorboard, but neither TensorFlow, ml-collections nor a network: PACK/wheels brings
# ml-collections. OUTDIR receives the params, eval.json, bench.json and train.log; the params are
# rewritten as training goes, so a run cut short still leaves its last ones.
# Environment: PYTHON (default python3).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"

export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
if [[ "${1:-}" == "--prepare" ]]; then
    exec "$py" "$repo/experiments/gpu_pack.py" "${2:?usage: gpu_train.sh --prepare PACK}" "${@:3}"
fi
usage="usage: gpu_train.sh [--smoke] [--budget-s S] [--part-mib M] OUTDIR [PACK]"
opts=()
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) opts+=(--smoke); shift ;;
        --budget-s | --part-mib)
            [[ $# -ge 2 ]] || { echo "error: $1 needs a value; $usage" >&2; exit 2; }
            opts+=("$1" "$2"); shift 2 ;;
        -*) echo "error: unknown option $1; $usage" >&2; exit 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [[ ${#args[@]} -lt 1 || ${#args[@]} -gt 2 ]]; then
    echo "$usage" >&2
    exit 2
fi
out="${args[0]}"
pack="${args[1]:-$repo/.gpu}"
mkdir -p "$out"

if ! "$py" -c "import ml_collections" 2>/dev/null; then
    shopt -s nullglob
    wheels=("$pack"/wheels/*.whl)
    if [[ ${#wheels[@]} -eq 0 ]]; then
        echo "error: ml_collections is missing and $pack/wheels has no wheels (run --prepare)" >&2
        exit 2
    fi
    site="${TMPDIR:-/tmp}/cqrnet_site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "${wheels[@]}"
    export PYTHONPATH="$PYTHONPATH:$site"
fi
if [[ -d "$pack/data" ]]; then
    CQRNET_DATA_DIR="$(cd "$pack/data" && pwd)"
    export CQRNET_DATA_DIR
fi
"$py" "$repo/experiments/gpu_train.py" ${opts[@]+"${opts[@]}"} --out "$out" 2>&1 |
    tee "$out/train.log"
