"""The report's two charts (sites and footprint per year), drawn with matplotlib from a run's
``yearly_summary.csv``: PNG files for a briefing paper, SVG for the page.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

from pipeline import styles

log = logging.getLogger(__name__)

SITES_PNG = "sites_per_year.png"
FOOTPRINT_PNG = "footprint_per_year.png"
# key -> PNG file, cumulative column, divisor, y label, title (after the AOI's name), column of the new
CHARTS = {
    "sites": (
        SITES_PNG,
        "sites_total",
        1.0,
        "sites (cumulative)",
        "mining sites by the end of each year (+ new)",
        "sites_new",
    ),
    "footprint": (
        FOOTPRINT_PNG,
        "footprint_total_m2",
        1e4,
        "hectares (cumulative)",
        "disturbed area, ponds and cleared slopes",
        None,
    ),
}


def read_summary(path: Path) -> dict[str, list]:
    """The columns of a yearly summary CSV the charts need: years as int, provisional as bool, the
    rest as float (NaN where empty: a gap year's new count is unknown)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = {"year": [int(r["year"]) for r in rows], "provisional": [r["provisional"] == "True" for r in rows]}
    for spec in CHARTS.values():
        for c in (spec[1], spec[5]):
            if c:
                columns[c] = [float(r[c]) if r[c] != "" else math.nan for r in rows]
    return columns


def _figure(
    table: dict[str, list],
    column: str,
    scale: float,
    ylabel: str,
    title: str,
    prefix: str,
    colours,
    new_column: str | None = None,
):
    years = table["year"]
    values = [v / scale for v in table[column]]
    fig, ax = _new_figure()
    x = list(range(len(years)))
    bars = ax.bar(x, values, color=[colours[y] for y in years], edgecolor="#444444", linewidth=0.6)
    ax.set_xticks(x, [str(y) for y in years])
    new = [v / scale for v in table[new_column]] if new_column else [None] * len(years)
    for bar, y, v, n, prov in zip(bars, years, values, new, table["provisional"]):
        bar.set_gid(f"{prefix}-bar-{y}")  # the browser test counts these in the page's DOM
        if prov:
            bar.set_hatch("//")
        text = f"{v:,.0f}" if scale == 1 else f"{v:,.1f}"
        if n is not None and math.isnan(n):
            text += " (gap)"  # no clear view that year: new is unknown, not zero
        elif n is not None:
            text += f" (+{n:,.0f})" if scale == 1 else f" (+{n:,.1f})"
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, v),
            ha="center",
            va="bottom",
            fontsize=9,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_ylim(0, max(values + [1]) * 1.15)
    if any(table["provisional"]):
        ax.text(
            1,
            -0.18,
            "hatched: provisional (year not over)",
            transform=ax.transAxes,
            ha="right",
            fontsize=8,
            color="#555555",
        )
    fig.tight_layout()
    return fig


def draw(summary_csv: Path, aoi: str, out_dir: Path) -> dict[str, str]:
    """Draw the two charts of the yearly summary at ``summary_csv``; write them as PNG into ``out_dir``;
    return them as inline SVG."""
    table = read_summary(summary_csv)
    colours = styles.year_colours(table["year"])
    svgs = {}
    for key, (png, column, scale, ylabel, title, new_column) in CHARTS.items():
        fig = _figure(table, column, scale, ylabel, f"{aoi}: {title}", key, colours, new_column)
        svgs[key] = _save(fig, Path(out_dir) / png)
    return svgs


def _new_figure():
    import matplotlib
    from matplotlib.figure import Figure  # not pyplot: no GUI state, and a quarter of a second less to import

    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "kachin", "font.size": 10})
    fig = Figure(figsize=(6.0, 3.2), dpi=100)
    return fig, fig.subplots()


def _save(fig, png: Path) -> str:
    """Write ``fig`` as the PNG ``png`` (renamed into place) and return it as inline SVG."""
    tmp = png.with_name(png.name + ".tmp")
    fig.savefig(tmp, dpi=150, metadata={"Software": None}, format="png")
    tmp.replace(png)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


BELTS_PNG = "sites_per_belt.png"


def draw_belts(table, out_dir: Path) -> str:
    """Sites by the end of each year, a line per AOI (``table``: rows of ``yearly_summary_all.csv``), as
    ``BELTS_PNG`` in ``out_dir``; returns it as inline SVG."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _new_figure()
    for aoi, rows in table.groupby("aoi", sort=True):
        line = ax.plot(rows["year"], rows["sites_total"], marker="o", label=aoi)[0]
        line.set_gid(f"belt-{aoi}")
    ax.set_ylabel("sites (cumulative)")
    ax.set_title("mining sites by the end of each year, per AOI", fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(table):
        ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(out_dir) / BELTS_PNG)
