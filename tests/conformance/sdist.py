"""A framework's own tests, taken from its source distribution on PyPI at test time.

:func:`fetch` downloads ``NAME==VERSION``'s sdist with pip (once; then it is cached under
``.cache/conformance/``, which git ignores, or ``$SESSIONKEEPER_CONFORMANCE_CACHE``), extracts the
files a conformance module needs and returns their directory. Nothing of it is vendored into the
repository. When the download is impossible (offline, PyPI down) the calling module is skipped with
the reason, or fails when ``SESSIONKEEPER_REQUIRE_SERVICES=1``, as for a missing server.

:func:`load` executes one downloaded file as a module of its own, from the cache directory: the
cache is never on ``sys.path`` nor in ``testpaths``, so pytest never collects the downloaded files
itself and their ``conftest.py`` plugins never reach the rest of our suite. A conformance module
takes the upstream tests and fixtures it wants into its own namespace, where pytest finds them.

Concurrent test runs share the cache: a lock file serializes the download and extraction, and a
directory counts as extracted only once every requested file is in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.services import REQUIRE_ENV, services_required

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ENV = "SESSIONKEEPER_CONFORMANCE_CACHE"
DOWNLOAD_TIMEOUT_S = 180  # pip builds the sdist's metadata: about 25 s for Django here


class SdistUnavailable(Exception):
    """The sdist could not be downloaded or does not hold the files asked for."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or REPO_ROOT / ".cache" / "conformance")


def fetch(name: str, version: str, members: tuple[str, ...]) -> Path:
    """The directory holding ``members`` (paths inside the sdist, without its top directory; a
    path ending in ``/`` is a whole subtree) of ``name==version``'s sdist; skips or fails the
    calling module when that is impossible (see the module docstring).

    Fails when the installed ``name`` is not ``version``: the tests and the tables of expected
    failures were written for that version."""
    installed = importlib.metadata.version(name)
    if installed != version:
        pytest.fail(
            f"{name} {installed} is installed but the conformance tests are pinned to {version}: "
            f"update the pin and check the module's tables against {name} {installed}'s tests",
            pytrace=False,
        )
    try:
        return _fetch(name, version, members)
    except SdistUnavailable as exc:
        reason = f"{name}=={version} sdist unavailable: {exc}"
    if services_required():
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 so this is an error", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def _fetch(name: str, version: str, members: tuple[str, ...]) -> Path:
    root = cache_dir() / f"{name.lower()}-{version}"
    if _complete(root, members):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root.parent / ".lock"):
        if not _complete(root, members):  # another run may have finished it meanwhile
            with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
                archive = _download(name, version, Path(tmp))
                staged = Path(tmp) / "extracted"
                _extract(archive, members, staged)
                if root.exists():
                    _remove_tree(root)  # an older, partial extraction
                staged.rename(root)
    return root


def _complete(root: Path, members: tuple[str, ...]) -> bool:
    return all((root / m).exists() for m in members)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _download(name: str, version: str, into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", "--quiet", "--retries", "2", "--timeout", "30",
        "--dest", str(into), f"{name}=={version}",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise SdistUnavailable(f"pip download took over {DOWNLOAD_TIMEOUT_S} s") from None
    archives = sorted(into.glob("*.tar.gz"))
    if done.returncode != 0 or not archives:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise SdistUnavailable(f"`{' '.join(command[2:])}` failed: {tail or 'no .tar.gz'}")
    return archives[0]


def _extract(archive: Path, members: tuple[str, ...], into: Path) -> None:
    with tarfile.open(archive) as tar:
        chosen = []
        for info in tar.getmembers():
            _, _, inner = info.name.partition("/")  # drop the sdist's top directory
            if any(inner == m or (m.endswith("/") and inner.startswith(m)) for m in members):
                info.name = inner
                chosen.append(info)
        tar.extractall(into, members=chosen, filter="data")
    missing = [m for m in members if not (into / m).exists()]
    if missing:
        raise SdistUnavailable(f"{archive.name} has no {', '.join(missing)}")


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


def load(path: Path, name: str) -> types.ModuleType:
    """Execute the file ``path`` as module ``name`` (kept in ``sys.modules``, so that pickling,
    dataclasses and relative imports work); a second call returns the same module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@contextlib.contextmanager
def stand_in_modules(modules: Mapping[str, types.ModuleType]) -> Iterator[None]:
    """Let ``import name`` find ``modules[name]`` while the block runs, and only then: for an
    upstream test module that imports a helper module we do not load (or that collides with one
    of ours, as ``tests.types`` would)."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def module_of(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def tests_of(module: types.ModuleType, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The test functions of ``module`` (those named in ``names``, or all ``test_*``), to put in a
    conformance module's namespace so that pytest collects them there."""
    chosen = names if names is not None else tuple(n for n in vars(module) if n.startswith("test"))
    return {name: getattr(module, name) for name in chosen}


def fixtures_of(module: types.ModuleType) -> dict[str, Any]:
    """Every pytest fixture ``module`` defines, by name."""
    return {
        name: value
        for name, value in vars(module).items()
        if type(value).__name__ == "FixtureFunctionDefinition"
    }
