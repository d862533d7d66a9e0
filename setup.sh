#!/usr/bin/env bash
# Set up speechrnn on a Debian/Ubuntu machine, as root (or with sudo available):
# the Debian packages it needs, a virtual environment in .venv, and the package in it.
# --dev adds what the tests need: pytest, ruff, selenium, hypothesis, and Debian's
# chromium and chromium-driver (the MLflow UI test drives a real headless browser).
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    *) echo "usage: bash setup.sh [--dev]" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(espeak-ng flite libsndfile1)
if ((DEV)); then
  APT_PACKAGES+=(chromium chromium-driver)
fi
if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
  APT_PACKAGES+=(python3-venv)
fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
echo "setup: installing speechrnn and its dependencies into .venv"
if ((DEV)); then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
echo "setup: done"
