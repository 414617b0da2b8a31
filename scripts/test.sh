#!/usr/bin/env bash
# Installs the project with its test tools into .venv and runs the whole test suite.
# This is the README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch 2.13.0 is a CPU build on our machines; install it first so nothing pulls a CUDA build.
.venv/bin/pip install -q --disable-pip-version-check 'torch==2.13.0' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import torch, fastapi, celery" # fail here, clearly, if the install did not work
# The end-to-end tests talk to a real Redis on loopback; start one if none answers.
if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    sleep 1
  fi
fi
# ...and PostgreSQL (the multi-host records tests); start the local cluster if it is installed but down.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    sleep 2
  fi
fi
# ...and a headless browser for the web page's test (tests/browser): Debian's chromium and its driver.
if ! (command -v chromium >/dev/null && command -v chromedriver >/dev/null); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
      >/dev/null 2>&1 || echo "could not install chromium; the browser test will say so" >&2
  fi
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
