#!/usr/bin/env bash
# The project's test command (README "Run the tests"): installs what the tests need on
# a fresh machine (redis-server through apt-get when missing, a venv with the package
# and its dev extra), then runs the linters, the type check and the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "installing redis-server and redis-tools (the tests start their own servers)"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi

VENV="${SERGEANT_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev]"

echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy --strict sergeant adapters"
"$VENV/bin/mypy" --strict sergeant adapters
echo "== mypy: adapters conform to their ports (tests/typing/conformance.py)"
"$VENV/bin/mypy" --strict tests/typing/conformance.py
echo "== pytest"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
