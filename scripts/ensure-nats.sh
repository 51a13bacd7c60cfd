#!/usr/bin/env bash
# Make sure a nats-server binary from Debian is installed, for tests/replication (each test starts
# a private server on a free loopback port; the system service is never used). Idempotent and
# quiet when it is already there.
#
# With --serve (make demo-peers): also make sure one listens on 127.0.0.1:${NATS_PORT:-4222},
# starting it in the background if nothing does (its log: ${TMPDIR:-/tmp}/sessionkeeper-nats.log).
# It is left running.
#
# Never fails the build: without the binary the replication tests skip with the reason (or fail,
# with SESSIONKEEPER_REQUIRE_SERVICES=1). Only --serve fails, when no server can be had.
set -u

say() { echo "ensure-nats: $*" >&2; }

binary() {
    command -v nats-server 2>/dev/null || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; }
}

install() {
    command -v apt-get >/dev/null || { say "no apt-get: install nats-server yourself"; return; }
    [ "$(id -u)" = "0" ] || { say "not root: cannot apt-get install nats-server"; return; }
    say "installing nats-server from Debian"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nats-server \
        >/dev/null 2>&1; then
        timeout 300 apt-get update -q >/dev/null 2>&1 || say "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nats-server \
            >/dev/null 2>&1 || say "could not install nats-server"
    fi
}

port="${NATS_PORT:-4222}"
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

[ -n "$(binary)" ] || install
[ "${1:-}" = "--serve" ] || exit 0

listening && exit 0
bin="$(binary)"
[ -n "$bin" ] || { say "no nats-server binary, and none listens on 127.0.0.1:$port"; exit 1; }
log="${TMPDIR:-/tmp}/sessionkeeper-nats.log"
say "starting $bin on 127.0.0.1:$port (log: $log)"
setsid "$bin" -a 127.0.0.1 -p "$port" >>"$log" 2>&1 < /dev/null &
for _ in $(seq 100); do
    listening && exit 0
    sleep 0.1
done
say "nats-server did not start listening on 127.0.0.1:$port; see $log"
exit 1
