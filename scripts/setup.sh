#!/usr/bin/env bash
# One-step set-up on a fresh machine: PyTorch, laimark_pl with its dev tools, and a Docker engine
# for the Docker sandbox backend (installed and started when missing; skipped with a warning when
# LAIMARK_SKIP_DOCKER=1). Idempotent: re-running installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check "torch==2.13.0"
python -m pip install -q --disable-pip-version-check -e ".[dev]"
if [ "${LAIMARK_SKIP_DOCKER:-0}" != "1" ]; then
  bash .ci/docker-setup.sh
fi
echo "laimark_pl set up: $(python -c 'import laimark_pl, torch; print("torch", torch.__version__)')"
