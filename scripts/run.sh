#!/usr/bin/env bash
# Start Piper for local use: installs what is missing, then runs the database
# (embedded unless DATABASE_URL is set), the demo IMAP server (unless IMAP_HOST
# is set), the imap-executor and the web page on http://127.0.0.1:8000/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/secretary run "$@"
