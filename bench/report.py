"""What a benchmark section returns, and how it is shown: a text table on stdout, Markdown for
``docs/benchmarks.md``. Sections produce preformatted cells, so rendering knows no units."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BenchConfig:
    """Run-wide settings every section reads. ``quick`` shrinks every workload to a smoke run."""

    quick: bool = False
    #: Where a section that draws a chart writes it (beside the Markdown report); ``None``: no file.
    chart: Path | None = None


@dataclass(frozen=True)
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Verdict:
    """A target, printed as PASS or FAIL. Informative: it never fails the run."""

    target: str
    measured: str
    passed: bool

    @property
    def word(self) -> str:
        return "PASS" if self.passed else "FAIL"


@dataclass
class SectionResult:
    title: str
    intro: str
    tables: list[Table] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # "skipped: ..." and caveats, shown as given
    images: list[tuple[str, str]] = field(
        default_factory=list
    )  # (alt text, path beside the report)


@dataclass(frozen=True)
class Section:
    """One benchmark. ``key`` selects it on the command line (``--only wsgi``)."""

    key: str
    run: Callable[[BenchConfig], SectionResult]


# -- machine -------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def machine_info() -> list[tuple[str, str]]:
    import sessionkeeper

    return [
        ("date", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("command", "`make bench`"),
        ("CPU", f"{cpu_model()} ({os.cpu_count()} logical CPUs)"),
        (
            "Python",
            f"{platform.python_implementation()} {platform.python_version()} ({sys.platform})",
        ),
        (
            "load average",
            "{:.2f} {:.2f} {:.2f} (1, 5, 15 min) at the start".format(*os.getloadavg()),
        ),
        ("sessionkeeper", f"{sessionkeeper.__version__} (commit {git_commit()})"),
    ]


# -- rendering -----------------------------------------------------------------------------------


def _widths(table: Table) -> list[int]:
    return [max(len(r[i]) for r in [table.columns, *table.rows]) for i in range(len(table.columns))]


def table_text(table: Table) -> str:
    """Aligned columns: the first (labels) to the left, the numbers to the right."""
    widths = _widths(table)

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(table.columns), rule, *(line(r) for r in table.rows)])


def table_markdown(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---", *("---:" for _ in table.columns[1:])]
    return "\n".join([line(table.columns), line(align), *(line(r) for r in table.rows)])


def verdict_line(v: Verdict) -> str:
    return f"{v.word}  {v.target}: {v.measured}"


def section_text(result: SectionResult) -> str:
    out = [result.title, "=" * len(result.title), result.intro, ""]
    for table in result.tables:
        out += [table_text(table), ""]
    out += [f"  {n}" for n in result.notes]
    out += [f"  chart: {path}" for _, path in result.images]
    out += [verdict_line(v) for v in result.verdicts]
    return "\n".join(out).rstrip() + "\n"


def section_markdown(result: SectionResult) -> str:
    out = [f"## {result.title}", "", result.intro, ""]
    out += [line for alt, path in result.images for line in (f"![{alt}]({path})", "")]
    for table in result.tables:
        out += [table_markdown(table), ""]
    out += [f"- {n}" for n in result.notes]
    if result.notes:
        out.append("")
    out += [f"- **{v.word}** {v.target}: {v.measured}" for v in result.verdicts]
    return "\n".join(out).rstrip() + "\n"


def document_markdown(info: Sequence[tuple[str, str]], results: Sequence[SectionResult]) -> str:
    head = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`.venv/bin/python -m bench`); do not edit by hand. "
        "Targets are printed as PASS/FAIL and never fail the build.",
        "",
        table_markdown(Table(["", ""], [[k, v] for k, v in info])),
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(section_markdown(r) for r in results)


# -- number formatting ---------------------------------------------------------------------------


def us(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def ratio(value: float) -> str:
    return f"{value:.2f}x" if value < 100 else f"{value:.0f}x"
