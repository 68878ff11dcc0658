#!/usr/bin/env bash
# Install everything the product and its tests need on a fresh machine:
# Debian packages (Dovecot for the demo/tests, Chromium for browser tests),
# a virtualenv with the Python package, and the front-end assets from npm.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/sbin/dovecot ] || need_apt+=(dovecot-imapd)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)  # htmx assets; the tests' Gmail double
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: please install ${need_apt[*]} (apt-get needs root)" >&2
  else
    echo "setup: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
fi
# The packaged service would hold port 143 and is not used: the product runs private instances.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now dovecot >/dev/null 2>&1 || true; fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi

vendor=app/static/vendor
if [ ! -f "$vendor/htmx.min.js" ] || [ ! -f "$vendor/sse.js" ] || [ ! -d node_modules/hoodiecrow-imap ] \
  || [ package.json -nt "$vendor/htmx.min.js" ]; then
  npm install --no-audit --no-fund --silent >/dev/null
  mkdir -p "$vendor"
  cp node_modules/htmx.org/dist/htmx.min.js "$vendor/htmx.min.js"
  cp node_modules/htmx-ext-sse/dist/sse.js "$vendor/sse.js"
fi
echo "setup: ready"
