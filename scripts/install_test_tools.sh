#!/usr/bin/env bash
# OS tools some tests use, installed when missing (Debian's packages; needs root and apt-get):
#   chromium, chromium-driver  the gateway page's headless browser test
#   tini                       the deploy image's init, run by tests/integration/test_deploy_shutdown.py
#   promtool                   from Debian's prometheus package, unpacked into the venv's bin
#                              (not installed as a service): tests/unit/test_deploy.py checks
#                              the Prometheus configs and every PromQL query with it
# Elsewhere it says what it could not install and exits 0: those tests then skip, naming it.
set -euo pipefail
VENV="${VENV:-.venv}"
missing=()
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || missing+=(chromium chromium-driver)
command -v tini >/dev/null || missing+=(tini)
need_promtool=""
[ -x "$VENV/bin/promtool" ] || command -v promtool >/dev/null || need_promtool=1
if [ ${#missing[@]} -eq 0 ] && [ -z "$need_promtool" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_test_tools: need root and apt-get for ${missing[*]} ${need_promtool:+promtool}; those tests will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
if [ ${#missing[@]} -gt 0 ]; then
  if apt-get install -y -qq "${missing[@]}" >/dev/null; then
    echo "install_test_tools: installed ${missing[*]}"
  else
    echo "install_test_tools: apt-get could not install ${missing[*]}; those tests will skip" >&2
  fi
fi
if [ -n "$need_promtool" ]; then
  work="$(mktemp -d)"
  if (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1) &&
     dpkg -x "$work"/prometheus_*.deb "$work/x" &&
     cp "$work/x/usr/bin/promtool" "$VENV/bin/promtool"; then
    echo "install_test_tools: promtool unpacked into $VENV/bin"
  else
    echo "install_test_tools: could not unpack promtool; the PromQL check will skip" >&2
  fi
  rm -rf "$work"
fi
