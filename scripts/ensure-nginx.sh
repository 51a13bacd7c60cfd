#!/usr/bin/env bash
# Make sure an nginx binary (and, with `--haproxy`, a haproxy binary) from Debian is installed, for
# `make chaos` and tests/chaos. Idempotent and quiet when they are already there. Installs only:
# the chaos runs start their own nginx master on a loopback port with a generated configuration,
# never the system nginx service.
#
# Exit status: 0 when nginx is usable (haproxy is best effort), 1 when it could not be installed.
set -u

say() { echo "ensure-nginx: $*" >&2; }

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

UPDATED=0
# apt_install PKG...: try each package in turn; `apt-get update` at most once per run.
apt_install() {
    command -v apt-get >/dev/null || { say "no apt-get: install $1 yourself"; return 1; }
    [ "$(id -u)" = "0" ] || { say "not root: cannot apt-get install $1"; return 1; }
    local pkg
    for pkg in "$@"; do
        if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" \
            >/dev/null 2>&1; then
            return 0
        fi
        if [ "$UPDATED" = "0" ]; then
            say "apt-get update"
            timeout 300 apt-get update -q >/dev/null 2>&1 || say "apt-get update failed"
            UPDATED=1
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" \
                >/dev/null 2>&1 && return 0
        fi
    done
    return 1
}

status=0
if ! have nginx; then
    say "installing nginx from Debian"
    apt_install nginx-light nginx || { say "could not install nginx"; status=1; }
fi

if [ "${1:-}" = "--haproxy" ] && ! have haproxy; then
    say "installing haproxy from Debian"
    apt_install haproxy || say "could not install haproxy (its configuration is then not checked)"
fi
exit "$status"
