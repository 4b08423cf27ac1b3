"""The run report: one self-contained ``report.html`` an analyst can open offline, and the charts as PNG
for a briefing paper.

Everything the page needs is inside it: Leaflet (vendored in ``pipeline/data/leaflet``, BSD-2-Clause),
the features as GeoJSON, the charts as inline SVG. Nothing is fetched from a CDN, so it opens the same on
a laptop in the field as on the desk; the optional satellite and OpenStreetMap backgrounds are the only
things that need a network, and they are off until switched on.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import Transformer

from pipeline import charts, export, reference, stac, styles
from pipeline.charts import FOOTPRINT_PNG, SITES_PNG

log = logging.getLogger(__name__)

REPORT = "report.html"
DATA = Path(__file__).parent / "data"
LEAFLET = DATA / "leaflet"
MAP_DECIMALS = 6  # ~10 cm: plenty for a screen, keeps the page small


# --- the page -------------------------------------------------------------------------------------


def _leaflet() -> tuple[str, str]:
    js = (LEAFLET / "leaflet.js").read_text(encoding="utf-8")
    css = (LEAFLET / "leaflet.css").read_text(encoding="utf-8")
    for name in ("layers.png", "layers-2x.png"):
        data = base64.b64encode((LEAFLET / "images" / name).read_bytes()).decode()
        css = css.replace(f"url(images/{name})", f"url(data:image/png;base64,{data})")
    css = css.replace("url(images/marker-icon.png)", "none")  # no markers on this map
    return js, css


def _geojson(gdf: gpd.GeoDataFrame) -> dict:
    if gdf.crs is not None and gdf.crs.to_epsg() != 4326:
        gdf = gdf.to_crs(4326)
    gdf = gdf.copy()
    # coordinates rounded, not snapped as GEOS's set_precision does (which keeps every ring valid at that
    # precision, 23 ms of the export's 0.3 s on the bench AOI, for a map a screen draws either way)
    gdf["geometry"] = shapely.transform(gdf.geometry.values, lambda xy: np.round(xy, MAP_DECIMALS))
    for c in gdf.columns:
        if c != "geometry" and gdf[c].dtype.kind == "f":
            gdf[c] = gdf[c].round(3)
        elif gdf[c].dtype == bool:
            gdf[c] = gdf[c].astype(int)
    return gdf.to_geo_dict(na="null", drop_id=True)


def _aoi_outline(manifest: dict) -> dict:
    """The AOI polygon (WGS84) from the manifest, else the grid's box."""
    if manifest.get("aoi_geometry"):
        return manifest["aoi_geometry"]

    a, b, c, d, e, f = manifest["grid"]["transform"]
    h, w = manifest["grid"]["shape"]
    t = Transformer.from_crs(manifest["grid"]["crs"], 4326, always_xy=True)
    return shapely.geometry.mapping(shapely.box(*t.transform_bounds(c, f + e * h, c + a * w, f)))


def _coverage(run_dir: Path, years: list[int], valid=None) -> dict[int, dict]:
    """Per year: share of grid pixels with at least one and at least five clear views, from the run's
    clear views per year (``valid``: (year, y, x), as written to its GeoTIFF; else read from that)."""
    p = run_dir / export.VALID_TIF
    if valid is not None:
        v = valid
    elif not p.is_file():
        return {}
    else:
        with rasterio.open(p) as ds:
            v = ds.read()
    return {
        y: {
            "any": float((v[i] > 0).mean()),
            "five": float((v[i] >= 5).mean()),
            "min": int(v[i].min()),
            "max": int(v[i].max()),
        }
        for i, y in enumerate(years[: len(v)])
    }


def _or_gap(v, fmt=lambda v: f"{int(v)}") -> str:
    """A year's new count, or 'gap' where no clear view left it unknown."""
    return "gap" if pd.isna(v) else fmt(v)


def _table_html(table: pd.DataFrame, coverage: dict) -> str:
    heads = [
        "year",
        "sites new",
        "sites total",
        "ponds new",
        "ponds total",
        "pond area (ha)",
        "cleared new (ha)",
        "footprint total (ha)",
        "clear views (median)",
        "pixels with ≥ 5 clear views",
        "",
    ]
    rows = []
    for r in table.itertuples():
        cov = coverage.get(int(r.year))
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{v}</td>"
                for v in [
                    r.year,
                    _or_gap(r.sites_new),
                    r.sites_total,
                    _or_gap(r.ponds_new),
                    r.ponds_total,
                    f"{r.pond_area_m2 / 1e4:,.2f}",
                    _or_gap(r.cleared_area_new_m2, lambda v: f"{v / 1e4:,.1f}"),
                    f"{r.footprint_total_m2 / 1e4:,.1f}",
                    r.valid_observations,
                    f"{cov['five']:.0%}" if cov else "n/a",
                    "provisional" if r.provisional else "",
                ]
            )
            + "</tr>"
        )
    return (
        '<table class="yearly"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in heads)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _skipped_summary(skipped: list) -> str:
    reasons: dict[str, int] = {}
    for s in skipped:
        r = str(s.get("reason", "?")) if isinstance(s, dict) else str(s)
        # group "eo:cloud_cover 94% above 90%" and the like by their words, not their numbers
        r = re.sub(r"\s+", " ", re.sub(r"[\d.]+%?", "N", r)).strip()[:80]
        reasons[r] = reasons.get(r, 0) + 1
    return ", ".join(f"{n} {html.escape(r)}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])) or "none"


def _provenance_html(manifest: dict) -> str:
    cfg = manifest.get("config", {})
    grid = manifest.get("grid", {})
    rows = [
        ("AOI", manifest.get("aoi")),
        ("period", f"{cfg.get('period', {}).get('start')} to {cfg.get('period', {}).get('end')}"),
        ("source", f"{manifest.get('source')} ({cfg.get('source', {}).get('catalog') or ''})"),
        ("scenes used", f"{manifest.get('n_scenes_used')} scenes on {manifest.get('n_days')} days"),
        (
            "scenes skipped",
            f"{len(manifest.get('scenes_skipped', []))}: {_skipped_summary(manifest.get('scenes_skipped', []))}",
        ),
        ("DEM", ", ".join(manifest.get("dem_items", [])) or "none (slope rule not applied)"),
        ("grid", f"{grid.get('crs')}, {' x '.join(map(str, grid.get('shape', [])))} px"),
        ("run created", manifest.get("created")),
        ("code version", manifest.get("code_version")),
        ("site linkage", f"{cfg.get('sites', {}).get('linkage_m')} m"),
        ("timings (s)", ", ".join(f"{k} {v}" for k, v in manifest.get("timings_s", {}).items())),
        ("packages", ", ".join(f"{k} {v}" for k, v in manifest.get("packages", {}).items())),
    ]
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in manifest.get("warnings", []))
    scenes = "<br>".join(html.escape(s) for s in manifest.get("scenes_used", []))
    return (
        f'<table class="prov">{body}</table>'
        + (f'<h3>Warnings</h3><ul class="warnings">{warn}</ul>' if warn else "")
        + f"<details><summary>Scene ids used ({len(manifest.get('scenes_used', []))})</summary>"
        f'<p class="ids">{scenes}</p></details>'
        + "<details><summary>Configuration as run</summary><pre>"
        + html.escape(json.dumps(cfg, indent=1))
        + "</pre></details>"
    )


def page_layers(run_dir: Path) -> dict[str, dict]:
    """The run's layers as the page's map draws them: GeoJSON (WGS84) dicts, from its GeoPackage."""
    layers = export.read_layers(run_dir)
    return {name: _geojson(layers[name]) for name in export.LAYERS}


def _reference_html(result: dict | None) -> str:
    """The section "Check against real labels", from a run's reference.json (``python -m pipeline
    reference``); empty for a run not checked yet."""
    if result is None:
        return ""

    def table(heads, rows, cls):
        return (
            f'<table class="{cls}"><thead><tr>'
            + "".join(f"<th>{html.escape(h)}</th>" for h in heads)
            + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
            + "</tbody></table>"
        )

    head = '<h2 id="reference">Check against real labels</h2>'
    if not reference.has_labels(result):
        return head + f'<p class="note">{html.escape(reference.nothing_line(result))}.</p>'
    body = [
        head,
        f"<p>The real labels inside this AOI (Earth Genome's mapped pools, mine, non-mine and river points "
        f"and CNN detections; MIT), and how many of them this run finds. Labels outside the AOI are ignored; "
        f"details in {export.REFERENCE_MD} and {export.REFERENCE_JSON}.</p>",
    ]
    if result.get("simulated"):
        body.append(
            '<p class="note">The scenes of this run are simulated, with ponds on the mapped pools: the pool '
            "figures check the detector on simulated imagery of the real layout, not on real imagery.</p>"
        )
    body.append(table(reference.TABLE_HEADS, reference.table_rows(result), "reference"))
    det = reference.detection_rows(result)
    if det:
        body.append(
            f'<p class="note">Earth Genome\'s detections (48 px patches, about 480 m) against the run footprint, '
            f"the {html.escape(reference.FOOTPRINT)}.</p>"
        )
        body.append(table(reference.DETECTION_HEADS, det, "reference detections"))
    return "\n".join(body)


def _read_reference(run_dir: Path) -> dict | None:
    p = run_dir / export.REFERENCE_JSON
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        log.warning("%s is not valid JSON (%s): the report leaves out the check against real labels", p, e)
        return None


def _headline(last: pd.Series) -> str:
    """The page's lead sentence, from the yearly table's last row."""
    return (
        f"By the end of {int(last['year'])}: <b>{int(last['sites_total'])} mining sites</b>, "
        f"{int(last['ponds_total'])} pond water bodies, {last['footprint_total_m2'] / 1e4:,.1f} ha disturbed"
        + (" (provisional: the year is not over or the period stops before its end)." if last["provisional"] else ".")
    )


CHANGE_TITLES = {
    "new": "new sites",
    "split": "split off a site",
    "grown": "grown",
    "redetected": "detected again",
    "merged": "merged into another",
    "quiet": "gone quiet",
    "verdict": "verdict changed",
}


def _changes_html(changes: pd.DataFrame | None) -> str:
    """The section at the top: what changed since the last run, by register id."""
    if changes is None:
        return ""
    if not len(changes):
        return '<section id="changes"><h2>Since the last run</h2><p>Nothing changed.</p></section>'
    counts = changes["change"].value_counts()
    head = " · ".join(f"{int(counts[k])} {t}" for k, t in CHANGE_TITLES.items() if k in counts)
    rows = "".join(
        f'<tr><td><a href="#site={int(r["site_id"])}">{int(r["site_id"])}</a></td>'
        + "".join(
            f"<td>{html.escape('' if pd.isna(r[c]) else str(r[c]))}</td>"
            for c in (
                "change",
                "n_ponds",
                "new_ponds",
                "footprint_m2",
                "footprint_change_pct",
                "review",
                "note",
            )
        )
        + "</tr>"
        for r in changes.to_dict("records")
    )
    return f"""<section id="changes"><h2>Since the last run</h2><p class="lead">{html.escape(head)}</p>
<table class="changes"><tr><th>site</th><th>change</th><th>ponds</th><th>new ponds</th><th>footprint m²</th>
<th>footprint change %</th><th>verdict</th><th>note</th></tr>{rows}</table>
<p class="note">Site ids are the register's (they last from run to run); also in {export.CHANGES_CSV} and
{export.CHANGES_GEOJSON}.</p></section>"""


def build_html(
    manifest: dict,
    layers: dict[str, dict],
    table: pd.DataFrame,
    svgs: dict[str, str],
    coverage: dict,
    reference: dict | None = None,
    changes: pd.DataFrame | None = None,
) -> str:
    """The page, from the layers as ``page_layers`` gives them; ``reference``: the run's reference.json;
    ``changes``: what changed since the last run (changes.csv)."""
    years = [int(y) for y in table["year"]]
    colours = styles.year_colours(years)
    page_data = {
        "layers": layers,
        "aoi": _aoi_outline(manifest),
        "years": years,
        "colours": {str(k): v for k, v in colours.items()},
        "symbols": {k: styles.SYMBOLS[k] for k in export.LAYERS},
        "titles": styles.LAYER_TITLES,
    }
    js, css = _leaflet()
    page_css, page_js = ((DATA / f).read_text(encoding="utf-8") for f in ("report.css", "report.js"))
    aoi = html.escape(str(manifest.get("aoi", "")))
    p = manifest.get("config", {}).get("period", {})
    counts = {k: len(v["features"]) for k, v in layers.items()}
    summary = _headline(table.iloc[-1])
    warn = " ".join(html.escape(w) for w in manifest.get("warnings", []))
    start, end = html.escape(str(p.get("start"))), html.escape(str(p.get("end")))
    created, code = html.escape(str(manifest.get("created"))), html.escape(str(manifest.get("code_version")))
    legend = "".join(f'<span class="sw" style="background:{c}"></span>{y}' for y, c in colours.items())
    charts = (
        f'<figure id="chart-sites">{svgs["sites"]}</figure><figure id="chart-footprint">{svgs["footprint"]}</figure>'
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{aoi}: rare-earth mining watch, {start} to {end}</title>
<style>{css}</style>
<style>
{page_css}</style></head>
<body data-aoi="{aoi}" data-sites="{counts["sites"]}" data-ponds="{counts["ponds"]}" \
data-clearings="{counts["clearings"]}">
<h1>{aoi}: rare-earth mining sites from Sentinel-2</h1>
<p class="sub">Period {start} to {end} ·
{manifest.get("n_scenes_used")} scenes · run {created} · code {code}</p>
<p class="lead">{summary}</p>
{f"<p class='note'>{warn}</p>" if warn else ""}{_changes_html(changes)}

<h2>Map</h2>
<div class="bar"><label for="year">Show features first seen by the end of</label>
<input type="range" id="year" min="{years[0]}" max="{years[-1]}" step="1" value="{years[-1]}">
<span id="year-label">{years[-1]}</span>
<span class="legend">{legend}</span></div>
<div id="map"></div>
<p class="note">Colour = first year (the same in QGIS, Google Earth and the charts). Clearings: translucent fill;
ponds: solid with a blue outline; sites: outlines. Click a polygon for its attributes. The satellite and
OpenStreetMap backgrounds (layer control, top right) need a network connection; everything else works offline.</p>

<h2>Sites and footprint per year</h2>
<div class="charts">{charts}</div>
<p class="note">Also in the run directory as {SITES_PNG} and {FOOTPRINT_PNG} (150 dpi) for briefing papers.</p>

<h2>Yearly table</h2>
{_table_html(table, coverage)}
<p class="note">Totals are cumulative to the end of each year. "Clear views" is the median number of cloud-free
Sentinel-2 observations per pixel in the year (the monsoon, June-September, leaves few); a year with few clear views
can hide new activity until the next dry season. Pond counts are detected water bodies, not individual pools.</p>

{_reference_html(reference)}

<h2>Provenance</h2>
{_provenance_html(manifest)}

<script>{js}</script>
<script>const RUN = {json.dumps(page_data, separators=(",", ":"))};</script>
<script>
{page_js}</script>
</body></html>
"""


def write_report(
    run_dir: Path,
    manifest: dict | None = None,
    svgs: dict[str, str] | None = None,
    layers: dict[str, dict] | None = None,
    valid=None,
    changes: pd.DataFrame | None = None,
) -> list[Path]:
    """Write report.html and the chart PNGs into ``run_dir`` (a run dir, or one being staged) from the
    files already there; returns the files written. ``svgs``: the charts if already drawn (``charts.draw``);
    ``layers``: the map's layers if already read (``page_layers``); ``valid``: the clear views per year
    just written to the run's GeoTIFF, not read back from it."""
    run_dir = Path(run_dir)
    manifest = manifest if manifest is not None else export.read_manifest(run_dir)
    layers = layers if layers is not None else page_layers(run_dir)
    table = pd.read_csv(run_dir / export.SUMMARY)
    years = [int(y) for y in table["year"]]
    svgs = svgs if svgs is not None else charts.draw(run_dir / export.SUMMARY, str(manifest.get("aoi", "")), run_dir)
    if changes is None and (run_dir / export.CHANGES_CSV).is_file():
        changes = pd.read_csv(run_dir / export.CHANGES_CSV)
    coverage = _coverage(run_dir, years, valid)
    page = build_html(manifest, layers, table, svgs, coverage, _read_reference(run_dir), changes)
    tmp = run_dir / (REPORT + ".tmp")  # refresh_report rewrites a finished run: never half a page
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(run_dir / REPORT)
    log.info("report: %s (%d kB)", run_dir / REPORT, (run_dir / REPORT).stat().st_size // 1024)
    return [run_dir / REPORT, run_dir / SITES_PNG, run_dir / FOOTPRINT_PNG]


def refresh_report(run_dir: Path, add: Sequence[Path] = ()) -> list[Path]:
    """Rewrite the report of an existing run dir and update the checksums in its run.json; ``add``: files
    just written into the run dir (``reference``'s) to list there too."""
    run_dir = Path(run_dir)
    manifest = export.read_manifest(run_dir)
    written = write_report(run_dir, manifest)
    outputs = manifest.pop("outputs", {})
    files = [run_dir / n for n in outputs if (run_dir / n).is_file()]
    files += [p for p in [*written, *map(Path, add)] if p not in files]
    tmp = run_dir / (export.MANIFEST + ".tmp")
    export.write_manifest(tmp, manifest, files)
    tmp.replace(run_dir / export.MANIFEST)
    stac.write_item(run_dir)
    return written
