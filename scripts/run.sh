#!/usr/bin/env bash
# Start Piper for local use: installs what is missing, then runs the database
# (embedded unless DATABASE_URL is set), the demo IMAP server (unless IMAP_HOST
# is set), the imap-executor and the web page on http://127.0.0.1:8000/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The configured chat model's provider (SECRETARY_CHAT_MODEL=openai:…, anthropic:…,
# ollama:…): its pyproject extra, when its packages are not installed yet.
extra=$(.venv/bin/python -m app.graph.chat_model)
if [ -n "$extra" ]; then
  echo "run: installing the '$extra' chat model provider"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[$extra]"
fi
exec .venv/bin/secretary run "$@"
