#!/usr/bin/env bash
# Install the system packages celeryctl's lab and tests use, when missing (Debian/Ubuntu).
# The Debian packages do not start their services under a sandbox's policy-rc.d: the lab
# starts its own servers on free loopback ports, so nothing is started here.
# `install-deps.sh demo`: only what `make demo` uses (redis-server and Python's venv).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${1:-all}" != demo ]; then
if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  need+=(rabbitmq-server)
fi
command -v tmux >/dev/null 2>&1 || need+=(tmux)  # the terminal test of `queues watch`
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the TLS lab's certificates (lab up --tls, tests)
command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 || need+=(util-linux)  # the exposed-broker scenarios
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
