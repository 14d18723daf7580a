#!/usr/bin/env bash
# The project's two entry points (see README):
#   ./run.sh demo   the main job on the embedded digits data (no files to fetch)
#   ./run.sh test   the test suite (CI runs exactly this)
# Other verbs: ./run.sh peers (install the optional peer libraries), ./run.sh docs (API reference
# into site/), ./run.sh teamattack ARGS...
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

# The optional peers (torchattacks, foolbox, adv-lib) for teamattack.baselines; see docs/peers.md.
# --no-deps: their declared requirements would replace the CPU torch with a CUDA build
# (torchattacks, adv-lib: torchvision; torchattacks also pins an old requests). What they import
# is installed beside them: foolbox needs eagerpy, GitPython and requests at import time;
# torchattacks and adv-lib need only torch/numpy/scipy/tqdm (adv-lib's torchvision / visdom imports
# are stubbed by teamattack.baselines). Stamped, so reruns cost nothing.
PEERS="torchattacks==3.5.1 foolbox==3.3.4 adv-lib==0.2.8"
PEER_DEPS="eagerpy==0.30.0 GitPython>=3.1 requests>=2.25 typing_extensions>=4"
peers_setup() {
  local stamp="$VENV/.stamp-peers"
  local want; want=$(echo "$PEERS $PEER_DEPS" | cat - constraints.txt | sha1sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  local torch_before; torch_before=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt $PEERS
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt $PEER_DEPS
  local torch_after; torch_after=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
  if [ "$torch_before" != "$torch_after" ]; then
    echo "peers: torch changed from $torch_before to $torch_after; refusing to continue" >&2; exit 1
  fi
  GIT_PYTHON_REFRESH=quiet "$VENV/bin/python" -c "import importlib.util as u, torchattacks, foolbox; \
assert u.find_spec('adv_lib'), 'adv_lib missing'; print('peers: torchattacks', torchattacks.__version__, \
'foolbox', foolbox.__version__, 'adv-lib ok; torch', '$torch_after')"
  echo "$want" > "$stamp"
}

# Debian's chromium for the HTML report's browser test (tests/test_report.py); that one test is
# skipped, saying why, only where it cannot be installed (no apt-get, no root / sudo, no network).
browser_setup() {
  command -v chromium >/dev/null 2>&1 && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $sudo apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1; then return 0; fi
  echo "test: chromium could not be installed; the report's browser test will be skipped" >&2
}

# Data root: an explicit TEAMATTACK_DATA wins; otherwise the shared datasets beside the checkout.
if [ -z "${TEAMATTACK_DATA:-}" ] && [ -d ../shared/datasets ]; then
  export TEAMATTACK_DATA; TEAMATTACK_DATA=$(cd ../shared/datasets && pwd)
fi

cmd=${1:-demo}; shift || true
case "$cmd" in
  demo) setup "[test]"; exec "$VENV/bin/teamattack" demo "$@" ;;
  test) setup "[test,docs]"; peers_setup; browser_setup; exec "$VENV/bin/python" -m pytest -n 2 "$@" ;;
  peers) setup "[test]"; peers_setup ;;
  docs) setup "[test,docs]"; exec "$VENV/bin/python" -m mkdocs build "$@" ;;   # API reference -> site/
  teamattack) setup "[test]"; exec "$VENV/bin/teamattack" "$@" ;;
  *) echo "usage: ./run.sh demo|test|peers|docs|teamattack ARGS" >&2; exit 2 ;;
esac
