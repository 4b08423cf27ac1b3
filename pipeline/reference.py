"""The check against real labels: how much of what was mapped inside a run's AOI the run finds, and how
often it flags what is not mining.

The labels are Earth Genome's for the Pang War belt (MIT; ``pipeline/data/README.md``): 2,497 mapped
pools, 188 mine and 323 non-mine points, 500 river points, and that project's CNN detections of 2022 and
2024-25. Only labels inside the run's AOI count. The scoring functions are pure (points and polygons in
the run's CRS in, numbers out); reading the labels and the run, and writing ``reference.md``,
``reference.json`` and the report's section, sit at the edges (``check_run``, ``write_reference``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from pipeline import export
from pipeline.aoi import area_m2, lonlat_fault
from pipeline.errors import LabelError, OutputError
from pipeline.rules import SitesConfig
from pipeline.vectorize import link_sites

log = logging.getLogger(__name__)

LABELS_DIR = Path(__file__).parent / "data"
POOLS = "pang_war_pools.csv"
MINES = "myanmar_positives.geojson"
NON_MINES = "myanmar_negatives.geojson"
RIVERS = "myanmar_river_negatives.geojson"


@dataclass(frozen=True)
class Detections:
    """One of Earth Genome's CNN products: its file and the years of the imagery it was run on."""

    file: str
    first_year: int
    last_year: int

    @property
    def name(self) -> str:
        return (
            str(self.first_year)
            if self.first_year == self.last_year
            else f"{self.first_year}-{self.last_year % 100:02d}"
        )


DETECTIONS = (
    Detections("pang_war_myanmar_48px_v3.7-ensemble_0.30_1_2022-12_2022.geojson", 2022, 2022),
    Detections("pang_war_myanmar_48px_v4.0_0.80_1_2024-12_2025.geojson", 2024, 2025),
)
LABEL_FILES = (POOLS, MINES, NON_MINES, RIVERS, *(d.file for d in DETECTIONS))

# A pool is 1-2 Sentinel-2 pixels across (median spacing 15 m): a pond polygon a pixel off still finds
# it, as evaluate matches ponds of 1-2 pixels by centroid within 20 m
POOL_MATCH_M = 20.0
# The pipeline's site rule (vectorize.link_sites): the 2,497 pools make 283 clusters, close to Global
# Witness's "almost 300 locations"
POOL_LINKAGE_M = SitesConfig.model_fields["linkage_m"].default
# A mine point marks a mine, not a pond: it may sit on a track or terrace between the detected features
MINE_NEAR_M = 100.0
RIVER_MATCH_M = 20.0
FOOTPRINT = "union of the run's ponds and clearings (its disturbed area, as footprint_total_m2), not the site envelopes"


# --- reading the labels ---------------------------------------------------------------------------


@dataclass
class Labels:
    """Real labels, one GeoSeries per kind, all in one CRS."""

    pools: gpd.GeoSeries
    mines: gpd.GeoSeries
    non_mines: gpd.GeoSeries
    rivers: gpd.GeoSeries
    detections: dict[str, gpd.GeoSeries]  # product name (Detections.name) -> patches

    def counts(self) -> dict[str, int]:
        return {
            "pools": len(self.pools),
            "mine_points": len(self.mines),
            "non_mine_points": len(self.non_mines),
            "river_points": len(self.rivers),
            **{f"detections_{k}": len(v) for k, v in self.detections.items()},
        }


def _missing(path: Path) -> LabelError:
    return LabelError(
        f"label file {path} does not exist: --labels must name a folder holding the files of "
        "pipeline/data (see its README.md), under the same names"
    )


def _check_lonlat(path: Path, bounds) -> None:
    lon0, lat0, lon1, lat1 = bounds
    if not np.all(np.isfinite(bounds)):
        raise LabelError(f"label file {path} has coordinates that are not numbers: fix or drop those rows")
    fault = lonlat_fault(bounds)
    if fault == "swapped":
        raise LabelError(
            f"label file {path} has latitudes up to {max(abs(lat0), abs(lat1)):.1f}: latitude and "
            "longitude look swapped; put longitude first (x = lon, y = lat)"
        )
    if fault == "outside":
        raise LabelError(
            f"label file {path} has coordinates outside lon/lat ranges ({lon0:.1f}..{lon1:.1f}, "
            f"{lat0:.1f}..{lat1:.1f}): it must be in WGS84 degrees (EPSG:4326); reproject it "
            "(QGIS: Export > Save Features As, CRS EPSG:4326)"
        )


def read_pools(path: Path) -> gpd.GeoSeries:
    """The mapped pools: a CSV of points, ``x`` = lon and ``y`` = lat (WGS84)."""
    if not path.is_file():
        raise _missing(path)
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise LabelError(f"label file {path} is empty: it needs a header x,y and one row per pool") from None
    except (UnicodeDecodeError, pd.errors.ParserError, OSError) as e:
        raise LabelError(
            f"label file {path} cannot be read as CSV ({type(e).__name__}: {str(e)[:100]}): "
            "save it as UTF-8 CSV with columns x (lon) and y (lat)"
        ) from None
    lacking = [c for c in ("x", "y") if c not in df.columns]
    if lacking:
        raise LabelError(
            f"label file {path} lacks column(s) {', '.join(lacking)}: pools are points with "
            "x = lon and y = lat in WGS84"
        )
    if df.empty:
        raise LabelError(f"label file {path} has no pools (a header and no rows): one row per pool")
    x, y = (pd.to_numeric(df[c], errors="coerce").to_numpy(float) for c in ("x", "y"))
    _check_lonlat(path, (np.min(x), np.min(y), np.max(x), np.max(y)))
    return gpd.GeoSeries(shapely.points(x, y), crs=4326)


def read_geojson(path: Path, kind: str) -> gpd.GeoSeries:
    """Points (``kind`` "points") or polygons ("polygons") of a GeoJSON file in WGS84 lon/lat, the only
    CRS GeoJSON has (RFC 7946), as for AOI files."""
    if not path.is_file():
        raise _missing(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise LabelError(
            f"label file {path} is not valid JSON ({getattr(e, 'msg', e)}): save it as a GeoJSON "
            "FeatureCollection in lon/lat"
        ) from None
    if not isinstance(doc, dict) or doc.get("type") not in {"FeatureCollection", "Feature"}:
        raise LabelError(
            f"label file {path} is not GeoJSON (no FeatureCollection or Feature 'type'): save it as "
            "a GeoJSON FeatureCollection in lon/lat"
        )
    declared = str(((doc.get("crs") or {}).get("properties") or {}).get("name", ""))
    if declared and not any(k in declared.upper() for k in ("CRS84", "4326")):
        raise LabelError(
            f"label file {path} declares CRS {declared}: label GeoJSON must be WGS84 lon/lat; "
            "reproject it to EPSG:4326 (QGIS: Export > Save Features As, CRS EPSG:4326)"
        )
    features = doc.get("features") if doc["type"] == "FeatureCollection" else [doc]
    if not features:
        raise LabelError(f"label file {path} has no features: it needs the labels as GeoJSON features")
    try:
        geoms = gpd.GeoDataFrame.from_features(features, crs=4326).geometry
    except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
        raise LabelError(f"label file {path} has a geometry that cannot be read ({e}): fix its coordinates") from None
    if geoms.isna().any() or geoms.is_empty.any():
        n = int((geoms.isna() | geoms.is_empty).sum())
        raise LabelError(
            f"label file {path} has {n} feature(s) without a geometry: drop them or give each a "
            f"{'Point' if kind == 'points' else 'Polygon'}"
        )
    allowed = {"Point"} if kind == "points" else {"Polygon", "MultiPolygon"}
    kinds = set(geoms.geom_type)
    if not kinds <= allowed:
        raise LabelError(
            f"label file {path} holds {', '.join(sorted(kinds - allowed))}, not {kind}: this file must "
            f"hold only {' or '.join(sorted(allowed))} geometries"
        )
    _check_lonlat(path, geoms.total_bounds)
    # polygons drawn or exported by another tool may self-touch: repaired, as vectorised features are
    return geoms.make_valid() if kind == "polygons" else geoms


def read_labels(folder: Path | None = None) -> Labels:
    """All label files of ``folder`` (default: the packaged ones), checked; WGS84."""
    folder = Path(folder) if folder is not None else LABELS_DIR
    if not folder.is_dir():
        raise LabelError(
            f"labels folder {folder} does not exist: pass --labels a folder holding the files of "
            "pipeline/data (see its README.md)"
        )
    return Labels(
        pools=read_pools(folder / POOLS),
        mines=read_geojson(folder / MINES, "points"),
        non_mines=read_geojson(folder / NON_MINES, "points"),
        rivers=read_geojson(folder / RIVERS, "points"),
        detections={d.name: read_geojson(folder / d.file, "polygons") for d in DETECTIONS},
    )


# --- the run's AOI --------------------------------------------------------------------------------


def run_aoi(manifest: dict, run_dir: Path) -> tuple[shapely.Geometry, CRS]:
    """The run's AOI polygon in its grid's CRS (``aoi_geometry`` of run.json is WGS84 lon/lat; a run
    written before that was kept has its grid's box)."""
    grid = manifest.get("grid") or {}
    if not grid.get("crs"):
        raise OutputError(f"{run_dir}/{export.MANIFEST} has no grid CRS: rerun the pipeline for this AOI")
    crs = CRS.from_user_input(grid["crs"])
    if manifest.get("aoi_geometry"):
        aoi = gpd.GeoSeries([shapely.geometry.shape(manifest["aoi_geometry"])], crs=4326).to_crs(crs).iloc[0]
    else:
        a, _, c, _, e, f = grid["transform"]
        h, w = grid["shape"]
        aoi = shapely.box(c, f + e * h, c + a * w, f)
    return aoi, crs


def labels_in_aoi(labels: Labels, aoi: shapely.Geometry, crs: CRS) -> Labels:
    """The labels inside ``aoi`` (in ``crs``), reprojected to it: points inside it, detection patches
    clipped to it."""

    def points(g: gpd.GeoSeries) -> gpd.GeoSeries:
        g = g.to_crs(crs)
        return g[g.intersects(aoi)].reset_index(drop=True)

    def polygons(g: gpd.GeoSeries) -> gpd.GeoSeries:
        g = g.to_crs(crs).intersection(aoi)
        return g[area_m2(g) > 0].reset_index(drop=True)

    return Labels(
        pools=points(labels.pools),
        mines=points(labels.mines),
        non_mines=points(labels.non_mines),
        rivers=points(labels.rivers),
        detections={k: polygons(v) for k, v in labels.detections.items()},
    )


# --- scoring: points and polygons in the run's CRS in, numbers out --------------------------------


def share(part: float, whole: float) -> float | None:
    """``part / whole`` to 4 decimals; None when there is nothing to share."""
    return round(float(part) / float(whole), 4) if whole else None


def near(points: gpd.GeoSeries, shapes: gpd.GeoSeries, distance_m: float) -> np.ndarray:
    """For each point, whether it lies within ``distance_m`` of any of ``shapes`` (inside is 0 m)."""
    hit = np.zeros(len(points), dtype=bool)
    if len(points) and len(shapes):
        which, _ = shapes.sindex.query(points.values, predicate="dwithin", distance=distance_m)
        hit[which] = True
    return hit


def pool_recall(pools: gpd.GeoSeries, ponds: gpd.GeoSeries, sites: gpd.GeoSeries) -> dict:
    """Mapped pools found: within ``POOL_MATCH_M`` of a predicted pond, and (separately) of a predicted
    site polygon; pool clusters (single linkage at ``POOL_LINKAGE_M``, the pipeline's site rule) found
    when any of their pools lies within ``POOL_MATCH_M`` of a predicted site."""
    by_pond = near(pools, ponds, POOL_MATCH_M)
    by_site = near(pools, sites, POOL_MATCH_M)
    cluster = link_sites(pools, POOL_LINKAGE_M)
    n_clusters = int(cluster.max()) + 1 if len(cluster) else 0
    found_clusters = len(np.unique(cluster[by_site]))
    return {
        "n": len(pools),
        "found_by_pond": int(by_pond.sum()),
        "recall_by_pond": share(by_pond.sum(), len(pools)),
        "found_by_site": int(by_site.sum()),
        "recall_by_site": share(by_site.sum(), len(pools)),
        "n_clusters": n_clusters,
        "clusters_found": found_clusters,
        "cluster_recall": share(found_clusters, n_clusters),
    }


def flagged_as_mine(points: gpd.GeoSeries, sites: gpd.GeoSeries, features: gpd.GeoSeries) -> np.ndarray:
    """Points the run calls mining: inside a predicted site, or within ``MINE_NEAR_M`` of a predicted pond
    or clearing (``features``)."""
    return near(points, sites, 0.0) | near(points, features, MINE_NEAR_M)


def flagged_river(points: gpd.GeoSeries, ponds: gpd.GeoSeries, sites: gpd.GeoSeries) -> np.ndarray:
    """River points the run mistakes for mining: within ``RIVER_MATCH_M`` of a predicted pond, or inside a
    predicted site."""
    return near(points, ponds, RIVER_MATCH_M) | near(points, sites, 0.0)


def footprint_agreement(features: gpd.GeoSeries, patches: gpd.GeoSeries) -> dict:
    """How the run's footprint (the union of ``features``) and detection patches agree: the share of the
    footprint inside the patches, and the share of the patches' area in patches that hold a run feature."""

    def area(g: shapely.Geometry) -> float:
        return float(area_m2(gpd.GeoSeries([g], crs=patches.crs)).iloc[0])

    footprint = shapely.union_all(features.values) if len(features) else shapely.Polygon()
    detected = shapely.union_all(patches.values)
    holding = patches[patches.intersects(footprint)]
    return {
        "patches": len(patches),
        "patches_with_feature": len(holding),
        "detection_km2": round(area(detected) / 1e6, 4),
        "footprint_km2": round(area(footprint) / 1e6, 4),
        "footprint_share_in_detections": share(area(footprint.intersection(detected)), area(footprint)),
        "detection_share_with_feature": share(
            area(shapely.union_all(holding.values)) if len(holding) else 0.0, area(detected)
        ),
    }


def score(
    labels: Labels, ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame, sites: gpd.GeoDataFrame, years: list[int]
) -> dict:
    """Every figure of the check, from the labels inside the AOI and the run's layers, all in one CRS;
    ``years``: the run's period. A label set with nothing inside the AOI scores None."""
    features = pd.concat([ponds[["first_year", "geometry"]], clearings[["first_year", "geometry"]]], ignore_index=True)
    features = gpd.GeoDataFrame(features, geometry="geometry", crs=ponds.crs)
    out: dict = {"labels_in_aoi": labels.counts()}
    out["pools"] = pool_recall(labels.pools, ponds.geometry, sites.geometry) if len(labels.pools) else None
    mines = flagged_as_mine(labels.mines, sites.geometry, features.geometry)
    out["mine_points"] = (
        {"n": len(mines), "found": int(mines.sum()), "share_found": share(mines.sum(), len(mines))}
        if len(mines)
        else None
    )
    others = flagged_as_mine(labels.non_mines, sites.geometry, features.geometry)
    out["non_mine_points"] = (
        {"n": len(others), "flagged": int(others.sum()), "false_alarm_rate": share(others.sum(), len(others))}
        if len(others)
        else None
    )
    rivers = flagged_river(labels.rivers, ponds.geometry, sites.geometry)
    out["river_points"] = (
        {"n": len(rivers), "flagged": int(rivers.sum()), "false_alarm_rate": share(rivers.sum(), len(rivers))}
        if len(rivers)
        else None
    )
    out["detections"] = {}
    for d in DETECTIONS:
        patches = labels.detections[d.name]
        if not len(patches):
            out["detections"][d.name] = None
        elif years[0] > d.last_year or years[-1] < d.first_year:
            # a run that ends before the imagery, or starts after it (its first year then includes
            # everything already there), says nothing about that year's detections
            out["detections"][d.name] = {
                "patches": len(patches),
                "comparable": False,
                "why": f"the run covers {years[0]}-{years[-1]}, the detections' imagery {d.first_year}-{d.last_year}",
            }
        else:
            upto = min(d.last_year, years[-1])
            chosen = features[features["first_year"] <= upto].geometry
            out["detections"][d.name] = {
                "comparable": True,
                "features_first_year_up_to": upto,
                **footprint_agreement(chosen, patches),
            }
    return out


# --- the run dir: read, score, write --------------------------------------------------------------


def check_run(run_dir: Path, labels_dir: Path | None = None) -> dict:
    """Score a finished run dir against the labels inside its AOI (labels of ``labels_dir``, default
    the packaged ones). Bad label files fail first, whatever the AOI holds."""
    run_dir = Path(run_dir)
    manifest = export.read_manifest(run_dir)
    folder = Path(labels_dir) if labels_dir is not None else LABELS_DIR
    labels = read_labels(folder)
    aoi, crs = run_aoi(manifest, run_dir)
    inside = labels_in_aoi(labels, aoi, crs)
    layers = {name: gdf.to_crs(crs) for name, gdf in export.read_layers(run_dir).items()}
    years = export.period_years(manifest)
    return {
        "run": str(run_dir),
        "aoi": manifest.get("aoi"),
        "crs": crs.to_string(),
        "period": [years[0], years[-1]],
        # the simulator puts its ponds on the mapped pools: pool recall then checks the detector on simulated
        # imagery of the real layout, not on real imagery
        "simulated": str(manifest.get("aoi", "")).startswith("simulated"),
        "labels": {
            "dir": "pipeline/data (packaged)" if labels_dir is None else str(folder),
            "sha256": {name: export.sha256(folder / name) for name in LABEL_FILES},
        },
        "rules": {
            "pool_match_m": POOL_MATCH_M,
            "pool_linkage_m": POOL_LINKAGE_M,
            "mine_near_m": MINE_NEAR_M,
            "river_match_m": RIVER_MATCH_M,
            "footprint": FOOTPRINT,
        },
        **score(inside, layers["ponds"], layers["clearings"], layers["sites"], years),
    }


def has_labels(result: dict) -> bool:
    return any(result["labels_in_aoi"].values())


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def table_rows(result: dict) -> list[tuple[str, str, str, str, str]]:
    """The point and pool figures as rows: label set, in the AOI, found or flagged, share, rule. A set
    with nothing in the AOI keeps its row, so a reader sees it was looked for."""
    none = ("0", "", "n/a", "none in the AOI")
    rows = []
    p = result.get("pools")
    pools = [
        (
            "mapped pools, by pond",
            "found_by_pond",
            "recall_by_pond",
            "n",
            f"pool within {POOL_MATCH_M:g} m of a predicted pond",
        ),
        (
            "mapped pools, by site",
            "found_by_site",
            "recall_by_site",
            "n",
            f"pool within {POOL_MATCH_M:g} m of a predicted site polygon",
        ),
        (
            f"pool clusters ({POOL_LINKAGE_M:g} m linkage)",
            "clusters_found",
            "cluster_recall",
            "n_clusters",
            f"any of its pools within {POOL_MATCH_M:g} m of a predicted site",
        ),
    ]
    for title, found, rate, n, rule in pools:
        rows.append((title, str(p[n]), str(p[found]), _pct(p[rate]), rule) if p else (title, *none))
    for key, title, found, rate, rule in (
        (
            "mine_points",
            "mine points",
            "found",
            "share_found",
            f"inside a predicted site, or within {MINE_NEAR_M:g} m of a predicted pond or clearing",
        ),
        ("non_mine_points", "non-mine points (false alarms)", "flagged", "false_alarm_rate", "the same rule"),
        (
            "river_points",
            "river points (false alarms)",
            "flagged",
            "false_alarm_rate",
            f"within {RIVER_MATCH_M:g} m of a predicted pond, or inside a predicted site",
        ),
    ):
        r = result.get(key)
        rows.append((title, str(r["n"]), str(r[found]), _pct(r[rate]), rule) if r else (title, *none))
    return rows


def detection_rows(result: dict) -> list[tuple[str, ...]]:
    """Earth Genome's detections: product, patches in the AOI (with a run feature), detection area,
    run footprint, share of the footprint inside, share of the detections holding a run feature."""
    rows: list[tuple[str, ...]] = []
    for name, d in (result.get("detections") or {}).items():
        if d is None:
            rows.append((name, "0", "", "", "none in the AOI", ""))
        elif not d["comparable"]:
            rows.append((name, str(d["patches"]), "", "", f"not compared: {d['why']}", ""))
        else:
            rows.append(
                (
                    name,
                    f"{d['patches']} ({d['patches_with_feature']})",
                    f"{d['detection_km2']:.2f}",
                    f"{d['footprint_km2']:.2f} (to {d['features_first_year_up_to']})",
                    _pct(d["footprint_share_in_detections"]),
                    _pct(d["detection_share_with_feature"]),
                )
            )
    return rows


DETECTION_HEADS = (
    "product",
    "patches in AOI (with a run feature)",
    "detection area (km2)",
    "run footprint (km2, features first seen up to)",
    "footprint inside detections",
    "detection area holding a run feature",
)
TABLE_HEADS = ("label set", "in AOI", "found / flagged", "share", "rule")


def nothing_line(result: dict) -> str:
    return (
        f"no real labels fall inside the AOI of {result['run']} ({result['aoi']}): nothing to check against "
        f"(the labels of {result['labels']['dir']} cover the Pang War belt, about 98.08-98.54 E, 25.52-25.97 N)"
    )


def summary_lines(result: dict) -> list[str]:
    """What the command prints: one line when the AOI holds no labels."""
    if not has_labels(result):
        return [nothing_line(result)]
    lines = [
        f"real labels inside the AOI of {result['run']} ({result['aoi']}, {result['period'][0]}-{result['period'][1]}"
        + (", simulated scenes" if result["simulated"] else "")
        + "):"
    ]
    lines += [f"  {what:<31} {n:>5} {found:>5} {pct:>6}  ({rule})" for what, n, found, pct, rule in table_rows(result)]
    for name, d in (result.get("detections") or {}).items():
        if d is None:
            lines.append(f"  Earth Genome detections {name}: none in the AOI")
        elif d["comparable"]:
            lines.append(
                f"  Earth Genome detections {name}: {d['patches']} patches, {d['detection_km2']:.2f} km2 in the AOI; "
                f"{_pct(d['footprint_share_in_detections'])} of the run's footprint to "
                f"{d['features_first_year_up_to']} "
                f"lies inside them, {_pct(d['detection_share_with_feature'])} of their area holds a run feature"
            )
        else:
            lines.append(f"  Earth Genome detections {name}: {d['patches']} patches, not compared: {d['why']}")
    return lines


def _md_table(heads, rows) -> str:
    return "\n".join(
        ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads), *("| " + " | ".join(r) + " |" for r in rows)]
    )


def to_markdown(result: dict) -> str:
    head = (
        f"# Check against real labels: {result['aoi']}\n\n"
        f"Run `{result['run']}` ({result['period'][0]}-{result['period'][1]}, {result['crs']}) against the real "
        f"labels inside its AOI, from {result['labels']['dir']} (Earth Genome, MIT; see pipeline/data/README.md). "
        "Labels outside the AOI are ignored.\n"
    )
    if not has_labels(result):
        return head + f"\n{nothing_line(result)}.\n"
    parts = [head]
    if result["simulated"]:
        parts.append(
            "The scenes of this run are **simulated**: the simulator puts its ponds on the mapped pools, so "
            "the pool figures check the detector on simulated imagery of the real layout, not on real "
            "imagery; the other labels were not simulated at all.\n"
        )
    parts.append(_md_table(TABLE_HEADS, table_rows(result)) + "\n")
    det = detection_rows(result)
    if det:
        parts.append(
            f"Earth Genome's CNN detections (48 px patches, about 480 m), clipped to the AOI. Run footprint: "
            f"the {FOOTPRINT}, of the features first seen up to the detections' last year (or the run's).\n"
        )
        parts.append(_md_table(DETECTION_HEADS, det) + "\n")
    parts.append(
        "Counts in `reference.json`, with the rules and the sha256 of each label file. The pools were "
        "mapped on high-resolution imagery (pools ~15 m apart, 1-2 Sentinel-2 pixels): recall by pond is "
        "bounded by what 10 m pixels resolve; by site is the analyst's measure.\n"
    )
    return "\n".join(parts)


def write_reference(run_dir: Path, result: dict) -> list[Path]:
    """Write reference.json and reference.md into the run dir (``report.refresh_report`` then adds the
    section to the page and lists both in run.json). Returns the files written."""
    run_dir = Path(run_dir)
    return [
        export.write_atomic(run_dir / export.REFERENCE_JSON, json.dumps(result, indent=1) + "\n"),
        export.write_atomic(run_dir / export.REFERENCE_MD, to_markdown(result)),
    ]
