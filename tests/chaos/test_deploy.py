"""deploy/nginx.conf and deploy/haproxy.cfg: the shipped files are the ones the chaos run uses,
they parse, and nginx really routes by the session id's node suffix with a fallback."""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path

import pytest

from sessionkeeper.demo.cluster import Cluster, free_port
from sessionkeeper.stores import open_store
from tools.chaos.nginx import (
    FALLBACK_DIRECTIVES,
    PROXY_DIRECTIVES,
    ROUTING_BEGIN,
    ROUTING_END,
    Backend,
    Nginx,
    _indent,
    fallbacks,
    routing,
)

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
DEPLOY_NODES = [
    Backend("app1-a", "10.0.0.11:8001"),
    Backend("app1-b", "10.0.0.11:8002"),
    Backend("app2-a", "10.0.0.12:8001"),
    Backend("app2-b", "10.0.0.12:8002"),
]


def test_deploy_nginx_conf_is_the_routing_the_chaos_run_uses() -> None:
    text = NGINX_CONF.read_text()
    start, end = text.index(ROUTING_BEGIN), text.index(ROUTING_END) + len(ROUTING_END) + 1
    assert text[start:end] == routing(DEPLOY_NODES)
    assert _indent(PROXY_DIRECTIVES, 8) in text
    assert _indent(FALLBACK_DIRECTIVES, 8) in text


def test_routing_rejects_node_names_a_session_id_cannot_carry() -> None:
    with pytest.raises(ValueError):
        routing([Backend("a.b", "127.0.0.1:1")])
    with pytest.raises(ValueError):
        routing([])


def test_deploy_nginx_conf_parses(nginx_bin: str, tmp_path: Path) -> None:
    """``nginx -t`` on deploy/nginx.conf included in an http block, as in production."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / sub).mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\n"
        "events {}\nhttp {\n"
        f"    access_log off;\n    client_body_temp_path {tmp_path / 'body'};\n"
        f"    proxy_temp_path {tmp_path / 'proxy'};\n"
        f"    fastcgi_temp_path {tmp_path / 'fastcgi'};\n"
        f"    uwsgi_temp_path {tmp_path / 'uwsgi'};\n    scgi_temp_path {tmp_path / 'scgi'};\n"
        f"    include {NGINX_CONF};\n}}\n"
    )
    done = subprocess.run(
        [nginx_bin, "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


def test_deploy_haproxy_cfg_parses(haproxy_bin: str) -> None:
    done = subprocess.run(
        [haproxy_bin, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


def _request(port: int, method: str, path: str, cookie: str | None) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={"Cookie": f"sessionid={cookie}"} if cookie else {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, json.loads(body) if body else {}
    finally:
        conn.close()


@pytest.mark.slow
def test_nginx_routes_by_node_suffix_and_falls_back(nginx_bin: str, tmp_path: Path) -> None:
    """map + regex named capture + ``proxy_pass http://$variable`` reach the named upstream;
    an unknown node or no cookie goes to any node; a dead node's sessions go to another."""
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    store = open_store(url)
    store.init_schema()  # type: ignore[attr-defined]
    store.close()
    (tmp_path / "nginx").mkdir()
    with Cluster(2, url, "end-of-request", tmp_path) as cluster:
        cluster.start()
        backends = [Backend(n.name, f"127.0.0.1:{n.port}") for n in cluster.nodes]
        with Nginx(backends, free_port(), tmp_path / "nginx") as nginx:
            status, body = _request(nginx.port, "POST", "/login?user=ann", None)
            assert status == 200
            token = "A" * 32
            for node in cluster.nodes:
                served = {
                    _request(nginx.port, "GET", "/cart", f"{token}.{node.name}")[1]["node"]
                    for _ in range(4)
                }
                assert served == {node.name}
                other = next(n for n in cluster.nodes if n is not node)
                # With replication the id names the owner, then its backup: the owner routes.
                replicated = f"{token}.{node.name}.{other.name}"
                served = {
                    _request(nginx.port, "GET", "/cart", replicated)[1]["node"] for _ in range(4)
                }
                assert served == {node.name}
            unknown = [_request(nginx.port, "GET", "/cart", f"{token}.nope") for _ in range(4)]
            assert {s for s, _ in unknown} == {200}
            assert {b["node"] for _, b in unknown} == {n.name for n in cluster.nodes}

            first, second = cluster.nodes
            first.kill()
            for method, path in [("GET", "/cart"), ("POST", "/cart/add?seq=1")] * 3:
                status, body = _request(nginx.port, method, path, f"{token}.{first.name}")
                assert status == 200
                assert body["node"] == second.name
            assert fallbacks(nginx.access_log()) >= 1
