"""The chaos run (``make chaos``, ``python -m tools.chaos``): demo shop nodes on a private
PostgreSQL behind a real nginx that routes by the session id's node suffix, simulated shoppers
sending through nginx, and a timeline that SIGKILLs a node, SIGTERMs another, restarts PostgreSQL
and cuts it off. Afterwards every acknowledged update is checked against the store.

| module | what it holds |
|---|---|
| :mod:`.nginx` | the routing configuration (the one ``deploy/nginx.conf`` ships) and an nginx process |
| :mod:`.postgres` | a private PostgreSQL instance that can be restarted and stopped |
| :mod:`.scenario` | the timeline, the shoppers through nginx, the staleness monitor |
| :mod:`.verdict` | lost updates per policy, failed requests, staleness; the checks and the tables |
| :mod:`.nats` | a private nats-server that can be restarted |
| :mod:`.peers` | the replication scenario: nodes with ``replication=``, SIGKILL, SIGTERM, NATS restart |
| :mod:`.peer_verdict` | its verdict by the configuration's ``max_loss()``, its checks and tables |

Not imported by the rest of the package; it needs gunicorn, psycopg, an nginx binary and a
nats-server binary (``scripts/ensure-nginx.sh`` and ``scripts/ensure-nats.sh`` install them from
Debian). See docs/chaos.md.
"""
