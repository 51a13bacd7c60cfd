"""Fixtures for the chaos tests: an nginx binary (installed from Debian by
``scripts/ensure-nginx.sh`` when missing) and PostgreSQL's server binaries."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests import services
from tools.chaos.nginx import find_nginx
from tools.chaos.postgres import find_bin_dir

ROOT = Path(__file__).resolve().parents[2]
ENSURE = ROOT / "scripts" / "ensure-nginx.sh"


def _unavailable(what: str) -> None:
    if services.services_required():
        pytest.fail(f"{what}; {services.REQUIRE_ENV}=1 so this is an error", pytrace=False)
    pytest.skip(what)


def _ensure(*args: str) -> None:
    subprocess.run(["bash", str(ENSURE), *args], timeout=600, check=False)


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    """The nginx binary; runs scripts/ensure-nginx.sh first when there is none."""
    found = find_nginx()
    if found is None:
        _ensure()
        found = find_nginx()
    if found is None:
        _unavailable("nginx is not installed and scripts/ensure-nginx.sh could not install it")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    """The haproxy binary, installed when possible; skips (never fails) when it cannot be:
    HAProxy is the documented alternative, not something the suite needs."""
    found = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")
    if found is None:
        _ensure("--haproxy")
        found = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")
    if found is None:
        pytest.skip("haproxy is not installed and could not be installed from Debian")
    return found


@pytest.fixture(scope="session")
def postgres_bin_dir() -> Path:
    found = find_bin_dir()
    if found is None:
        _unavailable("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def nats_bin() -> str:
    """The nats-server binary (``scripts/ensure-nats.sh`` installs it from Debian)."""
    from tools.chaos.nats import find_nats

    found = find_nats()
    if found is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure-nats.sh")], timeout=600, check=False)
        found = find_nats()
    if found is None:
        _unavailable("nats-server is not installed and scripts/ensure-nats.sh could not install it")
    assert found is not None
    return found
