#!/usr/bin/env bash
# The project's two entry points (see README):
#   ./run.sh demo   the main job on the embedded digits data (no files to fetch)
#   ./run.sh test   the test suite (CI runs exactly this)
# Other verbs: ./run.sh peers (install the optional peer libraries), ./run.sh teamattack ARGS...
# Each creates or reuses .venv and installs what it needs; torch is pinned to the CPU wheel.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv

setup() {
  local extras=$1 stamp="$VENV/.stamp-$1"
  local want; want=$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-16)
  if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".${extras}"
    echo "$want" > "$stamp"
  fi
}

# Data root: an explicit TEAMATTACK_DATA wins; otherwise the shared datasets beside the checkout.
if [ -z "${TEAMATTACK_DATA:-}" ] && [ -d ../shared/datasets ]; then
  export TEAMATTACK_DATA; TEAMATTACK_DATA=$(cd ../shared/datasets && pwd)
fi

cmd=${1:-demo}; shift || true
case "$cmd" in
  demo) setup "[test]"; exec "$VENV/bin/teamattack" demo "$@" ;;
  test) setup "[test]"; exec "$VENV/bin/python" -m pytest -n 2 "$@" ;;
  peers)
    setup "[test]"
    # --no-deps: their declared requirements would replace the CPU torch (see docs/peers.md).
    "$VENV/bin/python" -m pip install -q --no-deps -c constraints.txt torchattacks==3.5.1 foolbox==3.3.4 adv-lib==0.2.8
    "$VENV/bin/python" -m pip install -q -c constraints.txt eagerpy gitpython typing_extensions requests ;;
  teamattack) setup "[test]"; exec "$VENV/bin/teamattack" "$@" ;;
  *) echo "usage: ./run.sh demo|test|peers|teamattack ARGS" >&2; exit 2 ;;
esac
