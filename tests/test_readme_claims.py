"""What the README and the Makefile promise a new user, checked against the project's own files
(issue 10): every extra is listed, and the first ``make demo`` says it is installing before the
minute of silence that installing takes."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_names_every_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = set(extras["optional-dependencies"]) - {"dev"}
    readme = (ROOT / "README.md").read_text()
    sentence = readme.split("Extras install the drivers:", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"\[(\w+)\]", sentence))
    assert listed == named, f"missing from the README: {sorted(named - listed)}"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_first_make_demo_says_it_is_installing_before_it_installs(tmp_path: Path) -> None:
    venv = tmp_path / "fresh-venv"  # no stamp there: the first run, as on a fresh clone
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "demo", f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    said = [i for i, line in enumerate(dry) if line.startswith("echo") and "Installing" in line]
    installs = [i for i, line in enumerate(dry) if "pip install" in line]
    assert said and installs and said[0] < installs[0], dry
    assert dry[-1].endswith("sessionkeeper demo")


@pytest.mark.parametrize("framework", ["Flask", "Django", "Starlette"])
def test_the_integrations_doc_has_a_porting_table_per_framework(framework: str) -> None:
    """The built-in's setting, ours, what changes for users: where our defaults differ."""
    doc = (ROOT / "docs" / "integrations.md").read_text()
    header = re.search(rf"^\| {framework}'s setting \|.*what changes for users \|$", doc, re.M)
    assert header, f"no porting table for {framework}"
    rows = doc[header.end() :].split("\n\n", 1)[0].splitlines()[2:]
    assert len(rows) >= 5 and all(row.startswith("| ") for row in rows)
    if framework == "Starlette":  # the difference issue 10 names: Starlette keeps 14 days
        assert any("14 days" in row and "30 minutes" in row for row in rows)
