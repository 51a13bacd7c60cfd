"""The source of sessionkeeper before ``Session`` became a ``dict`` (issue 10), for the rows that
show a figure before beside after in the same run.

``baseline_src()`` extracts ``src/sessionkeeper`` of :data:`COMMIT` with ``git archive`` into
``.cache/bench-baseline/<commit>/`` (once) and returns that ``src`` directory; a section then runs
its own measurement in a subprocess with it first on ``PYTHONPATH`` (:func:`env`), beside the
tree's own. Without git or the commit (an sdist or tarball install), :class:`Unavailable` says
why, and the section prints that instead of the row.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

#: The parent of 4095c7a, "Session is a dict subclass".
COMMIT = "abfce89"
LABEL = f"sessionkeeper before the dict Session (commit {COMMIT})"
ROOT = Path(__file__).resolve().parent.parent


class Unavailable(Exception):
    """The baseline's source cannot be had here."""


def baseline_src(commit: str = COMMIT) -> Path:
    dest = ROOT / ".cache" / "bench-baseline" / commit
    if (dest / "src" / "sessionkeeper" / "__init__.py").is_file():
        return dest / "src"
    if shutil.which("git") is None:
        raise Unavailable("git is not installed")
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise Unavailable(f"commit {commit} is not in this checkout (not a git clone?)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "src/sessionkeeper"],
            capture_output=True,
        )
        if archive.returncode != 0:
            raise Unavailable(f"git archive {commit} failed: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        os.makedirs(tmp)  # for TemporaryDirectory's cleanup
    return dest / "src"


def env(src: Path) -> dict[str, str]:
    """This process's environment with ``src`` first on ``PYTHONPATH`` (then the bench itself),
    and nothing of this tree's own ``src``."""
    own = str(ROOT / "src")
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != own]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT), *rest])}
