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

Not imported by the rest of the package; it needs gunicorn, psycopg and an nginx binary
(``scripts/ensure-nginx.sh`` installs it from Debian). See docs/chaos.md.
"""
