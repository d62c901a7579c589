#!/usr/bin/env bash
# The browser tests drive Debian's chromium with Playwright (no browser download).
# Installs it when missing and this user may use apt; otherwise says how.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: installing Debian's chromium for the browser tests"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "install_chromium: chromium is missing and cannot be installed here;" \
         "install Debian's chromium (apt-get install chromium) for the browser tests" >&2
fi
