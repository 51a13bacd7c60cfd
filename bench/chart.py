"""The chart of ``docs/benchmarks.md``: median µs per request, per framework and contender.

Horizontal bars on a logarithmic axis (a cache hit costs microseconds, a store round trip
hundreds), one panel per framework. It shows no session, the built-in session and the peers, and
sessionkeeper under EndOfRequest and TimeBased(10) on every store; the other policies are in the
tables. matplotlib is a bench requirement only (bench/requirements.txt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CHART_POLICIES = ("EndOfRequest", "TimeBased(10)")
COLORS = {
    "none": "#9e9e9e",
    "peer": "#e69138",
    "EndOfRequest": "#3d85c6",
    "TimeBased(10)": "#38a169",
}


def _label(row: Any) -> str:
    if row.kind == "none":
        return "no session"
    if row.kind == "peer":
        return row.label if row.store in ("-", "") else f"{row.label}, {row.store}"
    return f"sessionkeeper {row.policy}, {row.store}"


def _color(row: Any) -> str:
    return COLORS[row.kind] if row.kind != "sessionkeeper" else COLORS[row.policy]


def chart_rows(rows: Sequence[Any]) -> list[Any]:
    """The rows one panel shows, in table order: no session, peers, then sessionkeeper by policy."""
    keep = [r for r in rows if r.kind != "sessionkeeper"]
    for policy in CHART_POLICIES:
        keep += [r for r in rows if r.kind == "sessionkeeper" and r.policy == policy]
    return keep


def write_chart(
    by_framework: Mapping[str, Sequence[Any]], path: Path, titles: Mapping[str, str]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = [(fw, chart_rows(rows)) for fw, rows in by_framework.items() if rows]
    if not panels:
        return
    heights = [max(2, len(rows)) for _, rows in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(10, 0.28 * sum(heights) + 0.9 * len(panels) + 1.2),
        gridspec_kw={"height_ratios": heights},
        sharex=True,
        squeeze=False,
    )
    lo = min(r.median_us for _, rows in panels for r in rows)
    hi = max(r.median_us for _, rows in panels for r in rows)
    for ax, (fw, rows) in zip(axes[:, 0], panels, strict=True):
        y = list(range(len(rows)))
        values = [r.median_us for r in rows]
        ax.barh(y, values, color=[_color(r) for r in rows], height=0.7)
        ax.set_yticks(y, [_label(r) for r in rows], fontsize=8.5)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.6, hi * 3.5)
        ax.set_title(titles.get(fw, fw), loc="left", fontsize=11, fontweight="bold")
        ax.grid(axis="x", which="major", color="#dddddd", linewidth=0.8)
        ax.set_axisbelow(True)
        for yi, v in zip(y, values, strict=True):
            ax.text(v * 1.08, yi, f"{v:.0f}" if v >= 10 else f"{v:.1f}", va="center", fontsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[-1, 0].set_xlabel("median µs per request (log scale; lower is better)")
    height = fig.get_figheight()
    fig.suptitle("In-process cost per request (make bench)", y=1 - 0.12 / height, fontsize=12)
    fig.legend(
        handles=[
            Patch(color=COLORS["none"], label="no session"),
            Patch(color=COLORS["peer"], label="built-in session / peers"),
            Patch(
                color=COLORS["EndOfRequest"],
                label="sessionkeeper EndOfRequest (a store write per request)",
            ),
            Patch(color=COLORS["TimeBased(10)"], label="sessionkeeper TimeBased(10) (cache hit)"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.45 / height),
        ncol=2,
        fontsize=8.5,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 1.0 / height))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
