#!/usr/bin/env bash
# Make sure a nats-server binary from Debian is installed, for tests/replication (each test starts
# a private server on a free loopback port; the system service is never used). Idempotent and
# quiet when it is already there.
#
# Never fails the build: without the binary the replication tests skip with the reason (or fail,
# with SESSIONKEEPER_REQUIRE_SERVICES=1).
set -u

say() { echo "ensure-nats: $*" >&2; }

command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] && exit 0
command -v apt-get >/dev/null || { say "no apt-get: install nats-server yourself"; exit 0; }
[ "$(id -u)" = "0" ] || { say "not root: cannot apt-get install nats-server"; exit 0; }
say "installing nats-server from Debian"
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nats-server \
    >/dev/null 2>&1; then
    timeout 300 apt-get update -q >/dev/null 2>&1 || say "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nats-server \
        >/dev/null 2>&1 || say "could not install nats-server"
fi
exit 0
