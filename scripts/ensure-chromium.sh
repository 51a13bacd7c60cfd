#!/usr/bin/env bash
# Make sure Debian's chromium and chromium-driver are installed, for the console's browser test
# (tests/admin/test_browser.py). Idempotent and quiet when they are already there. Installs only:
# the test starts its own headless browser with a fresh profile, nothing runs as a service.
#
# Exit status: 0 when both are usable, 1 when they could not be installed.
set -u

say() { echo "ensure-chromium: $*" >&2; }

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ]; }

UPDATED=0
# apt_install PKG...: install them together; `apt-get update` at most once per run.
apt_install() {
    command -v apt-get >/dev/null || { say "no apt-get: install $* yourself"; return 1; }
    [ "$(id -u)" = "0" ] || { say "not root: cannot apt-get install $*"; return 1; }
    if DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends \
        "$@" >/dev/null 2>&1; then
        return 0
    fi
    if [ "$UPDATED" = "0" ]; then
        say "apt-get update"
        timeout 300 apt-get update -q >/dev/null 2>&1 || say "apt-get update failed"
        UPDATED=1
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q \
            --no-install-recommends "$@" >/dev/null 2>&1 && return 0
    fi
    return 1
}

if have chromium && have chromedriver; then
    exit 0
fi
say "installing chromium and chromium-driver from Debian"
apt_install chromium chromium-driver || { say "could not install chromium"; exit 1; }
have chromium && have chromedriver || { say "chromium installed but not on PATH"; exit 1; }
exit 0
