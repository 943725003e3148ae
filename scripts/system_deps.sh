#!/usr/bin/env bash
# The Debian packages the tests need beyond Python: headless Chromium and its WebDriver, for
# tests/test_browser.py (the book opened in a real browser with the network cut).
# Idempotent and fast: nothing is fetched when every package is installed already, and
# `apt-get update` runs only when something is missing. Needs root (or sudo) to install.
set -euo pipefail

PACKAGES=(chromium chromium-driver)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "system_deps: missing ${missing[*]} and no apt-get here; install them by hand" \
         "(tests/test_browser.py skips without Chromium outside CI)" >&2
    exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
        echo "system_deps: missing ${missing[*]}; run as root to install them" >&2
        exit 0
    fi
    SUDO=(sudo)
fi

echo "system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
