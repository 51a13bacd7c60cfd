#!/usr/bin/env bash
# Make sure the `wrk` HTTP load generator from Debian is installed, for the throughput section of
# `make bench` (bench/throughput.py). Idempotent and quiet when it is already there; runs
# `apt-get update` at most once, and only when the first install attempt fails.
#
# Exit status: 0 when wrk is usable, 1 when it could not be installed (the benchmark then falls
# back to its own bounded Python load generator and says so).
set -u

say() { echo "ensure-wrk: $*" >&2; }

command -v wrk >/dev/null 2>&1 && exit 0

command -v apt-get >/dev/null || { say "no apt-get: install wrk yourself"; exit 1; }
[ "$(id -u)" = "0" ] || { say "not root: cannot apt-get install wrk"; exit 1; }

install() {
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q --no-install-recommends wrk \
        >/dev/null 2>&1
}

say "installing wrk from Debian"
if ! install; then
    say "apt-get update"
    timeout 300 apt-get update -q >/dev/null 2>&1 || say "apt-get update failed"
    install || { say "could not install wrk"; exit 1; }
fi
command -v wrk >/dev/null 2>&1
