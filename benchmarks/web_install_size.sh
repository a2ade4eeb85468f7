#!/usr/bin/env bash
# What `cqrnet-jax serve`'s libraries add to a fresh virtual environment (docs in
# cqrnet_jax/apps/serve.py), against Gradio, the usual model-demo library; and the browser driver
# the tests add. From the repository root (uses /tmp):
#   bash benchmarks/web_install_size.sh > experiments/results/web_install_size.txt
set -euo pipefail
v="${TMPDIR:-/tmp}/cqrnet-venv-web"
size() { du -sk "$v" | cut -f1; }
measure() {  # label, then pip arguments
  local label=$1; shift
  rm -rf "$v"; python3 -m venv "$v"; "$v/bin/pip" install -q --upgrade pip 2>/dev/null
  local before; before=$(size)
  "$v/bin/pip" install -q "$@" 2>/dev/null
  echo "$label: +$(awk "BEGIN {printf \"%.1f\", ($(size) - $before) / 1024}") MB" \
    "($("$v/bin/pip" list 2>/dev/null | tail -n +3 \
    | grep -viE '^(pip|setuptools) ' | awk '{print $1"=="$2}' | tr '\n' ' '))"
}
measure "web extra (starlette, uvicorn)" -c requirements/constraints.txt starlette uvicorn
measure "tests' browser driver (selenium)" -c requirements/constraints.txt selenium
measure "gradio (latest, for comparison)" gradio
rm -rf "$v"
