#!/usr/bin/env bash
# `make demo` after the install: a lab with two workers and a queue nobody consumes, then
# what celeryctl says about it. Also run by scripts/readme_examples.py and the README test.
set -uo pipefail
cd "$(dirname "$0")/.."
bin="${VENV:-.venv}/bin"  # make demo VENV=DIR
$bin/celeryctl lab down >/dev/null 2>&1 || true
$bin/celeryctl lab up --workers 2 || exit $?
eval "$($bin/celeryctl lab env)" || exit $?
$bin/python -m celeryctl.lab.publish --count 25 >/dev/null || exit $?
for cmd in workers queues doctor; do
  echo; echo "\$ celeryctl $cmd"; $bin/celeryctl $cmd
done
echo
echo "The lab is still running. Next, from this directory:"
echo '  export PATH="$PWD/.venv/bin:$PATH"; eval "$(celeryctl lab env)"'
echo "  celeryctl doctor; celeryctl lab down    # README.md: your first five minutes"
exit 0
