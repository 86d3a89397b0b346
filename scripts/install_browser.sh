#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver for the gateway page's browser test
# (tests/integration/test_gateway_page.py) when they are missing. Needs root and apt-get;
# elsewhere it says so and exits 0: the test then skips, naming what is missing.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_browser: need root and apt-get to install chromium chromium-driver; the page test will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; then
  echo "install_browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
else
  echo "install_browser: apt-get could not install chromium chromium-driver; the page test will skip" >&2
fi
