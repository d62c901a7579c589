#!/usr/bin/env bash
# The browser tests drive Debian's chromium with Playwright (no browser download); fonts for
# every script of the 12 languages (Noto core: Arabic, Devanagari, Thai, Greek, Cyrillic, Latin;
# Noto CJK: Chinese) so that screenshots show letters, not empty boxes. Installs what is missing
# when this user may use apt; otherwise says how.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
for fonts in fonts-noto-core fonts-noto-cjk; do
    dpkg -s "$fonts" >/dev/null 2>&1 || missing+=("$fonts")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
else
    echo "install_chromium: missing ${missing[*]} and cannot install here;" \
         "install them with: apt-get install ${missing[*]}" >&2
    exit 0
fi
echo "install_chromium: installing ${missing[*]} for the browser tests"
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
