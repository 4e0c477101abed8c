#!/usr/bin/env bash
# Set up .venv if needed, lint (ruff, configured in pyproject.toml), run the test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest "$@"
