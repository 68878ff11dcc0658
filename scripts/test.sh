#!/usr/bin/env bash
# The whole test suite, as CI runs it: install, lint, unit + integration
# (real Postgres, real Dovecot), then the browser tests in their own pytest
# process (Playwright's sync API and pytest-asyncio do not share a process).
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh || exit 1
mkdir -p .data
rm -f .data/junit-*.xml

status=0
echo "== ruff"
.venv/bin/ruff check . || status=1
.venv/bin/ruff format --check . >/dev/null || { echo "ruff format: files need formatting (run .venv/bin/ruff format .)"; status=1; }

echo "== unit + integration"
.venv/bin/pytest -q -p no:cacheprovider tests/unit tests/integration --junitxml=.data/junit-main.xml "$@" || status=1

echo "== browser (e2e)"
.venv/bin/pytest -q -p no:cacheprovider -p no:asyncio tests/e2e --junitxml=.data/junit-e2e.xml "$@" || status=1

.venv/bin/python scripts/junit_summary.py .data/junit-main.xml .data/junit-e2e.xml || status=1
exit $status
