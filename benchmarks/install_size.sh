#!/usr/bin/env bash
# Size of a fresh virtual environment with the light install and with the tf extra (README's
# figures): bash benchmarks/install_size.sh  (from the repository root; uses /tmp)
set -euo pipefail
for kind in light tf; do
  v="${TMPDIR:-/tmp}/cqrnet-venv-$kind"; rm -rf "$v"; python3 -m venv "$v"
  "$v/bin/pip" install -q --upgrade pip
  extra=""; [ "$kind" = tf ] && extra="[tf]"
  start=$(date +%s)
  "$v/bin/pip" install -q -c requirements/constraints.txt -e ".$extra" 2>/dev/null
  echo "$kind: install $(( $(date +%s) - start )) s, venv $(du -sm "$v" | cut -f1) MB," \
    "tensorflow packages: $("$v/bin/pip" list 2>/dev/null | grep -ic tensorflow || true)"
  rm -rf "$v"
done
