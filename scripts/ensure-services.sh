#!/usr/bin/env bash
# Start whichever of PostgreSQL, MariaDB and Redis is down, wait until each answers, and make sure
# the `test` databases exist. Idempotent and quiet when everything is already up.
#
# Never fails the build: a server that cannot be started is reported here, and the tests that
# need it then skip (or fail, with SESSIONKEEPER_REQUIRE_SERVICES=1). See tests/services.py.
set -u

WAIT_S=${SESSIONKEEPER_SERVICE_WAIT_S:-30}

say() { echo "ensure-services: $*" >&2; }

# wait_for NAME CMD...: poll CMD until it succeeds, at most WAIT_S seconds.
wait_for() {
    local name=$1 deadline=$((SECONDS + WAIT_S))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            say "$name did not answer within ${WAIT_S}s"
            return 1
        fi
        sleep 0.5
    done
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }
mysql_up() { mysqladmin --connect-timeout=2 -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; }

ensure_postgres() {
    command -v pg_isready >/dev/null || { say "PostgreSQL is not installed"; return 1; }
    if ! pg_up; then
        say "starting PostgreSQL"
        local version
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
        [ -n "$version" ] || { say "no cluster under /etc/postgresql"; return 1; }
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 ||
            say "pg_ctlcluster $version main start failed"
        wait_for PostgreSQL pg_up || return 1
    fi
    local exists
    exists=$(psql -h 127.0.0.1 -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null)
    if [ "$exists" != "1" ]; then
        createdb -h 127.0.0.1 -U postgres test 2>/dev/null || pg_test_db_exists ||
            say "could not create PostgreSQL database 'test'"
    fi
}

# A concurrent run may have created it between our check and our createdb.
pg_test_db_exists() {
    [ "$(psql -h 127.0.0.1 -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null)" = "1" ]
}

ensure_redis() {
    command -v redis-server >/dev/null || { say "Redis is not installed"; return 1; }
    if ! redis_up; then
        say "starting Redis"
        mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 ||
            say "redis-server failed to start"
        wait_for Redis redis_up || return 1
    fi
}

ensure_mysql() {
    command -v mysqladmin >/dev/null || { say "MariaDB is not installed"; return 1; }
    if ! mysql_up; then
        say "starting MariaDB"
        if [ ! -d /run/mysqld ]; then
            mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null
        fi
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd >/dev/null 2>&1 ||
            say "mariadbd failed to start"
        wait_for MariaDB mysql_up || return 1
    fi
    mysql --connect-timeout=5 -h 127.0.0.1 -P 3306 -u root \
        -e "CREATE DATABASE IF NOT EXISTS test" >/dev/null 2>&1 ||
        say "could not create MariaDB database 'test'"
}

# Start the three at once; each waits for its own server.
ensure_postgres &
ensure_mysql &
ensure_redis &
wait
exit 0
