#!/bin/sh
# Install what the browser demo and tests/test_web.py need: Debian's Chromium and the pinned npm
# packages (onnxruntime-web, playwright-core; no browser download). Safe to run again.
set -eu
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
command -v npm >/dev/null 2>&1 || { echo "error: npm not found (apt-get install nodejs npm)" >&2; exit 1; }
# package-lock.json pins every package; only the npm registry is contacted.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts
