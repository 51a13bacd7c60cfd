"""``python -m bench``: run every benchmark section, print the tables, write docs/benchmarks.md.

``--quick`` shrinks every workload to a smoke run of a few seconds and, unless ``--markdown`` is
given, writes no file. ``--only KEY`` runs some sections (keys: see ``--help``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import (
    floor,
    frameworks,
    memory,
    replication,
    store_writes,
    storeload,
    stores,
    throughput,
    wsgi_overhead,
)
from .report import (
    BenchConfig,
    Section,
    SectionResult,
    document_markdown,
    machine_info,
    section_text,
)

#: In the order they run and appear. A new benchmark adds its module's SECTION here.
SECTIONS: list[Section] = [
    wsgi_overhead.SECTION,
    frameworks.SECTION,
    store_writes.SECTION,
    memory.SECTION,
    throughput.SECTION,
    storeload.SECTION,
    stores.SECTION,
    replication.SECTION,
    floor.SECTION,
]
DEFAULT_MARKDOWN = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    keys = [s.key for s in SECTIONS]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("sections", nargs="*", metavar="KEY", help="same as --only KEY")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--only", action="append", choices=keys, help="run only these sections")
    parser.add_argument(
        "--markdown",
        type=Path,
        help=f"write the report here (default: {DEFAULT_MARKDOWN} for a full run of every section)",
    )
    parser.add_argument("--no-markdown", action="store_true", help="write no report file")
    args = parser.parse_args(argv)
    for key in args.sections:
        if key not in keys:
            parser.error(f"unknown section {key!r}: choose from {', '.join(keys)}")
    args.only = (args.only or []) + args.sections or None

    markdown = args.markdown
    if markdown is None and not args.quick and not args.only:
        markdown = DEFAULT_MARKDOWN
    if args.no_markdown:
        markdown = None
    config = BenchConfig(quick=args.quick, chart=markdown.with_suffix(".png") if markdown else None)
    selected = [s for s in SECTIONS if not args.only or s.key in args.only]
    info = machine_info()
    for key, value in info:
        print(f"{key + ':':15s}{value.strip('`')}")
    print()
    started = time.perf_counter()
    results: list[SectionResult] = []
    for section in selected:
        result = section.run(config)
        results.append(result)
        print(section_text(result), flush=True)
    print(f"({time.perf_counter() - started:.0f} s)")

    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(document_markdown(info, results), encoding="utf-8")
        print(f"wrote {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
