"""Scores a run directory (contract 4) against ground truth (contract 5).

Only :func:`evaluate` touches files: it reads the run and the truth, then hands plain GeoDataFrames
in the run's UTM CRS to pure scoring functions. Every number returned is a plain JSON type.

Rules, and why:

* **Period.** The run's years are those of ``yearly_summary.csv``. A truth feature that began before the
  first year counts as the first year (the mine was already there when the record starts: the run can
  only ever date it to its first year); one that began after the last year is dropped.
* **Ponds** are matched many-to-one, because at 10 m adjacent pools merge into one detected pond. A
  (predicted, truth) pair matches when the polygons intersect or when the predicted pond's centroid
  is within ``match_distance_m`` of the truth polygon: a pond of 1-2 pixels can sit a pixel off its
  mapped outline. A truth pond is *found* if it is in any pair, a predicted pond is *correct* if it is
  in any pair. Recall over **detectable** truth ponds (column ``detectable``; where that is absent or
  empty, open water >= 300 m2) is what the sensor can be held to; its precision is the same predicted
  set, so it equals the overall precision (a prediction on a small real pond is not a false alarm).
* **Clearings** are matched by intersection only (they span many pixels), and scored by area too:
  IoU of the unions, area-weighted precision and recall.
* **First year** of a matched truth feature is compared with the first year of its best prediction:
  the one overlapping it most, else (centroid rule) the nearest.
* **Sites** in truth are single-linkage clusters (:func:`pipeline.vectorize.link_sites`) of truth ponds
  and clearings together, at the run's linkage distance; first year = the earliest member's, geometry =
  the members' convex hull. A predicted and a truth site match when they intersect once both are
  buffered by ``match_distance_m / 2``. Each truth site takes the predicted site it overlaps most for
  its first-year score.
* **Yearly** truth counts are the truth sites with ``first_year <= Y`` and the area of the union of truth
  ponds and clearings with ``first_year <= Y``, against the run's cumulative ``sites_total`` and
  ``footprint_total_m2`` (summed over AOIs if the summary has several).
* **Confounders** (optional truth layer): the fraction of swidden and landslide area (and of both,
  ``all``) covered by predicted clearings, and of paddy and river area covered by predicted ponds or
  clearings. Where the truth has them: villages, roads, streams, fish ponds and gold workings against
  ponds or clearings; road cuts and plantations against clearings. Overlapping confounder polygons are
  unioned first so no area counts twice.

Empty inputs: a ratio whose denominator is zero is ``None`` (JSON null), never 0 and never 1, so an
empty run is not silently scored as perfect. Precision with no predictions is null; recall with no
truth is null; F1 is null only when both are, and otherwise 0 if either is null (the other is then
necessarily 0). A relative error is 0 when truth and run are both 0 and null when only truth is 0.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from pipeline.aoi import area_m2
from pipeline.errors import PipelineError
from pipeline.rules import SitesConfig
from pipeline.vectorize import link_sites

log = logging.getLogger(__name__)

# for a run dir whose run.json is missing: the linkage a run takes by default
DEFAULT_LINKAGE_M = SitesConfig.model_fields["linkage_m"].default
DETECTABLE_AREA_M2 = 300.0
RUN_LAYERS = {
    "ponds": ["first_year"],
    "clearings": ["first_year"],
    "sites": ["site_id", "first_year"],
}
SUMMARY_COLUMNS = ["year", "sites_total", "footprint_total_m2"]
TRUTH_LAYERS = ("ponds", "clearings")
CLEARING_CONFOUNDERS = ("swidden", "landslide")
WATER_CONFOUNDERS = ("paddy", "river")
BUILT_CONFOUNDERS = ("village", "road")  # scored only where the truth has them (simulated "villages" scenario)
# Scored only where the truth has them (simulated "valley" scenario). Open water, and bare ground holding
# water (a gold working's sluice ponds), against ponds and clearings: any mining mapped there is false.
VALLEY_WATER_CONFOUNDERS = ("stream", "fish_pond", "gold_working")
# bare or cleared ground that is not mining, against clearings as swidden and landslides are
VALLEY_BARE_CONFOUNDERS = ("road_cut", "plantation")
AGAINST_MINING = (*WATER_CONFOUNDERS, *BUILT_CONFOUNDERS, *VALLEY_WATER_CONFOUNDERS)


# --------------------------------------------------------------------------------------------- entry point


def evaluate(
    run_dir: str | Path, truth: str | Path, *, linkage_m: float | None = None, match_distance_m: float = 20.0
) -> dict:
    """Score the run in ``run_dir`` against ``truth``; returns a JSON-ready dict.

    ``truth`` is a GeoPackage (layers ``ponds``, ``clearings``, optional ``confounders``), a GeoJSON with a
    ``layer`` column, or a directory holding ``ponds.geojson`` and ``clearings.geojson`` (and optionally
    ``confounders.geojson``). ``linkage_m`` defaults to the run's own (``run.json`` config ``sites.linkage_m``),
    else the config's default. Keys: ``inputs``, ``ponds``, ``clearings``, ``sites``, ``yearly``,
    ``confounders`` (null when the truth has none) and ``summary`` (the headline numbers, flat).
    """
    run_dir = Path(run_dir)
    run = _read_run(run_dir)
    if linkage_m is None:
        linkage_m = run["linkage_m"] if run["linkage_m"] is not None else DEFAULT_LINKAGE_M
    crs = run["ponds"].crs
    layers = read_truth(Path(truth), crs)
    years = run["summary"].index.to_numpy()
    first, last = int(years.min()), int(years.max())

    kept, inputs = {}, {}
    for name in TRUTH_LAYERS:
        kept[name], clipped, dropped = clip_to_period(layers[name], first, last)
        inputs[f"truth_{name}_clipped_to_first_year"] = clipped
        inputs[f"truth_{name}_dropped_after_last_year"] = dropped
    if clipped_total := sum(v for k, v in inputs.items() if k.endswith("first_year")):
        log.info("%d truth features began before %d and count as %d", clipped_total, first, first)

    scores = score(
        run["ponds"],
        run["clearings"],
        run["sites"],
        run["summary"],
        kept["ponds"],
        kept["clearings"],
        layers.get("confounders"),
        linkage_m=linkage_m,
        match_distance_m=match_distance_m,
    )
    scores["inputs"] = {
        "run": str(run_dir),
        "truth": str(truth),
        "crs": crs.to_string(),
        "first_year": first,
        "last_year": last,
        "linkage_m": float(linkage_m),
        "match_distance_m": float(match_distance_m),
        **inputs,
    }
    order = ["inputs", "summary", "ponds", "clearings", "sites", "yearly", "confounders"]
    return {k: scores[k] for k in order}


def score(
    pred_ponds: gpd.GeoDataFrame,
    pred_clearings: gpd.GeoDataFrame,
    pred_sites: gpd.GeoDataFrame,
    summary: pd.DataFrame,
    truth_ponds: gpd.GeoDataFrame,
    truth_clearings: gpd.GeoDataFrame,
    confounders: gpd.GeoDataFrame | None = None,
    *,
    linkage_m: float = DEFAULT_LINKAGE_M,
    match_distance_m: float = 20.0,
) -> dict:
    """Pure scoring: everything in one projected CRS, truth already clipped to the period.

    ``summary`` is indexed by year with columns ``sites_total``, ``footprint_total_m2`` (and optionally
    ``provisional``).
    """
    ponds = score_ponds(pred_ponds, truth_ponds, match_distance_m)
    clearings = score_clearings(pred_clearings, truth_clearings)
    truth_sites = derive_sites(truth_ponds, truth_clearings, linkage_m)
    sites = score_sites(pred_sites, truth_sites, match_distance_m)
    yearly = score_yearly(summary, truth_sites, truth_ponds, truth_clearings)
    conf = score_confounders(confounders, pred_ponds, pred_clearings) if confounders is not None else None
    summary_scores = {
        "site_f1": sites["f1"],
        "site_first_year_exact": sites["first_year_exact"],
        "pond_detectable_precision": ponds["detectable_precision"],
        "pond_detectable_recall": ponds["detectable_recall"],
        "pond_detectable_f1": ponds["detectable_f1"],
        "clearing_iou": clearings["area_iou"],
        "max_abs_rel_error_sites": yearly["max_abs_rel_error_sites"],
        "confounder_fraction_as_clearing": conf["all"]["fraction"] if conf else None,
    }
    return {
        "summary": summary_scores,
        "ponds": ponds,
        "clearings": clearings,
        "sites": sites,
        "yearly": yearly,
        "confounders": conf,
    }


# ------------------------------------------------------------------------------------------------ reading


def _fail_unreadable(path: Path, what: str, e: Exception) -> PipelineError:
    return PipelineError(f"{what} {path} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})")


def _read_run(run_dir: Path) -> dict:
    gpkg = run_dir / "footprints.gpkg"
    if not gpkg.is_file():
        raise PipelineError(
            f"run dir {run_dir} has no footprints.gpkg: pass the directory a finished "
            "`python -m pipeline run --out DIR` wrote"
        )
    try:
        names = set(pyogrio.list_layers(gpkg)[:, 0])
    except Exception as e:  # noqa: BLE001 - any driver failure means an unusable file
        raise _fail_unreadable(gpkg, "run file", e) from None
    out = {}
    for layer, cols in RUN_LAYERS.items():
        if layer not in names:
            raise PipelineError(
                f"run file {gpkg} has no layer '{layer}' (it has: {', '.join(sorted(names))}): "
                "re-run the pipeline to write a complete run dir (contract 4)"
            )
        gdf = gpd.read_file(gpkg, layer=layer)
        missing = [c for c in cols if c not in gdf.columns]
        if missing:
            raise PipelineError(
                f"run file {gpkg} layer '{layer}' lacks column(s) {', '.join(missing)}: "
                "re-run the pipeline to write a complete run dir (contract 4)"
            )
        out[layer] = gdf
    crs = out["ponds"].crs
    if crs is None or not crs.is_projected:
        raise PipelineError(
            f"run file {gpkg} layer 'ponds' has CRS {crs}, not a projected UTM CRS: "
            "re-run the pipeline (contract 4 writes the AOI's UTM zone)"
        )
    for layer in ("clearings", "sites"):
        out[layer] = _to_crs(out[layer], crs, f"run file {gpkg} layer '{layer}'")
        out[layer] = _clean(out[layer])
    out["ponds"] = _clean(out["ponds"])

    csv = run_dir / "yearly_summary.csv"
    if not csv.is_file():
        raise PipelineError(f"run dir {run_dir} has no yearly_summary.csv: re-run the pipeline to complete it")
    table = pd.read_csv(csv)
    missing = [c for c in SUMMARY_COLUMNS if c not in table.columns]
    if missing:
        raise PipelineError(f"{csv} lacks column(s) {', '.join(missing)}: re-run the pipeline (contract 4)")
    if table.empty:
        raise PipelineError(f"{csv} has no rows, so the run covers no year: re-run the pipeline over a period")
    out["summary"] = _summary_by_year(table)

    out["linkage_m"] = None
    manifest = run_dir / "run.json"
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PipelineError(f"{manifest} is not valid JSON ({e}): re-run the pipeline to rewrite it") from None
        value = ((doc.get("config") or {}).get("sites") or {}).get("linkage_m") if isinstance(doc, dict) else None
        out["linkage_m"] = float(value) if value is not None else None
    else:
        log.warning("%s is missing; using the default site linkage of %g m", manifest, DEFAULT_LINKAGE_M)
    return out


def _summary_by_year(table: pd.DataFrame) -> pd.DataFrame:
    """One row per year: cumulative sites and footprint summed over AOIs (a run may hold several)."""
    agg = {"sites_total": "sum", "footprint_total_m2": "sum"}
    table = table.copy()
    table["year"] = table["year"].astype(int)
    if "provisional" in table.columns:
        table["provisional"] = table["provisional"].map(_as_bool).fillna(False).astype(bool)
        agg["provisional"] = "any"
    return table.groupby("year").agg(agg).sort_index()


def read_truth(path: Path, crs) -> dict[str, gpd.GeoDataFrame]:
    """The truth layers, checked, in ``crs``: ``ponds`` and ``clearings`` always, ``confounders`` if present."""
    if path.is_dir():
        sources = {}
        for name in (*TRUTH_LAYERS, "confounders"):
            f = path / f"{name}.geojson"
            if f.is_file():
                sources[name] = (f, None)
            elif name in TRUTH_LAYERS:
                raise PipelineError(
                    f"truth directory {path} has no {name}.geojson: add it (features with a "
                    "first_year; an empty FeatureCollection if there are none) or pass a truth.gpkg"
                )
        layers = {name: _read_layer(f, layer) for name, (f, layer) in sources.items()}
    elif path.is_file():
        layers = _read_truth_file(path)
    else:
        raise PipelineError(
            f"truth {path} does not exist: pass a truth.gpkg, a GeoJSON with a 'layer' column, "
            "or a directory holding ponds.geojson and clearings.geojson"
        )

    out = {}
    for name, gdf in layers.items():
        where = f"truth {path}" + (f" layer '{name}'" if not path.is_dir() else f" file {name}.geojson")
        if name in TRUTH_LAYERS:
            if "first_year" not in gdf.columns:
                raise PipelineError(
                    f"{where} has no first_year column: add first_year (the year the "
                    "feature first appears) to every feature"
                )
            if gdf["first_year"].isna().any():
                raise PipelineError(
                    f"{where} has {int(gdf['first_year'].isna().sum())} feature(s) without a "
                    "first_year: fill it in (an estimate is better than none)"
                )
            gdf = gdf.assign(first_year=pd.to_numeric(gdf["first_year"]).astype(int))
        elif "kind" not in gdf.columns:
            raise PipelineError(
                f"{where} has no kind column: give each confounder a kind (swidden, landslide, paddy or river)"
            )
        else:
            gdf = gdf.assign(kind=gdf["kind"].astype(str).str.strip().str.lower())
        if gdf.crs is None:
            raise PipelineError(f"{where} declares no CRS: save it with its CRS (e.g. EPSG:4326 or EPSG:32647)")
        out[name] = _clean(_to_crs(gdf, crs, where))
    return out


def _read_truth_file(path: Path) -> dict[str, gpd.GeoDataFrame]:
    try:
        names = list(pyogrio.list_layers(path)[:, 0])
    except Exception as e:  # noqa: BLE001 - any driver failure means an unusable file
        raise _fail_unreadable(path, "truth file", e) from None
    if "ponds" in names or "clearings" in names:
        for name in TRUTH_LAYERS:
            if name not in names:
                raise PipelineError(
                    f"truth file {path} has no layer '{name}' (it has: {', '.join(names)}): "
                    f"add a '{name}' layer with a first_year column (empty if there are none)"
                )
        wanted = [*TRUTH_LAYERS, *(["confounders"] if "confounders" in names else [])]
        return {name: _read_layer(path, name) for name in wanted}
    # one layer whose features say which truth layer they belong to (the single-GeoJSON form)
    gdf = _read_layer(path, names[0] if names else None)
    if "layer" not in gdf.columns:
        raise PipelineError(
            f"truth file {path} has no layers 'ponds'/'clearings' and no 'layer' column: "
            "give each feature a property layer = ponds or clearings, or save a GeoPackage "
            "with layers ponds and clearings"
        )
    kind = gdf["layer"].astype(str).str.strip().str.lower()
    out = {}
    for name in (*TRUTH_LAYERS, "confounders"):
        part = gdf[kind == name].drop(columns="layer").reset_index(drop=True)
        if name in TRUTH_LAYERS or len(part):
            out[name] = part
    return out


def _read_layer(path: Path, layer: str | None) -> gpd.GeoDataFrame:
    try:
        return gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)
    except Exception as e:  # noqa: BLE001 - any driver failure means an unusable file
        raise _fail_unreadable(path, "truth file", e) from None


def _to_crs(gdf: gpd.GeoDataFrame, crs, where: str) -> gpd.GeoDataFrame:
    if gdf.crs is None:
        raise PipelineError(f"{where} declares no CRS: save it with its CRS")
    return gdf if gdf.crs == crs else gdf.to_crs(crs)


def _clean(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Drop null/empty geometries and repair invalid ones (hand-drawn labels often self-intersect)."""
    geom = gdf.geometry
    gdf = gdf[geom.notna().to_numpy() & ~geom.is_empty.to_numpy()].reset_index(drop=True)
    bad = ~gdf.geometry.is_valid.to_numpy()
    if bad.any():
        gdf = gdf.copy()
        fixed = shapely.make_valid(gdf.geometry.values[bad], method="structure", keep_collapsed=False)
        gdf.loc[bad, gdf.geometry.name] = fixed
        gdf = gdf[~gdf.geometry.is_empty.to_numpy()].reset_index(drop=True)
    return gdf


def _as_bool(value):
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in {"true", "t", "yes", "y", "1"}:
            return True
        if v in {"false", "f", "no", "n", "0"}:
            return False
        return None
    return bool(value)


# ----------------------------------------------------------------------------------------------- scoring


def clip_to_period(truth: gpd.GeoDataFrame, first: int, last: int) -> tuple[gpd.GeoDataFrame, int, int]:
    """Truth inside the run's period: earlier first years become ``first``, later features are dropped.

    Returns the clipped frame, the number clipped and the number dropped.
    """
    fy = truth["first_year"].to_numpy()
    keep = fy <= last
    clipped = int(((fy < first) & keep).sum())
    out = truth[keep].reset_index(drop=True)
    out = out.assign(first_year=np.maximum(out["first_year"].to_numpy(), first).astype(int))
    return out, clipped, int((~keep).sum())


def score_ponds(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, match_distance_m: float = 20.0) -> dict:
    """Many-to-one object scores of ponds (intersection, or predicted centroid within the distance)."""
    pairs = match_pairs(pred, truth, match_distance_m)
    detectable = detectable_mask(truth)
    found = np.zeros(len(truth), dtype=bool)
    found[pairs["truth"].to_numpy()] = True
    n_correct = int(pairs["pred"].nunique())
    precision = _ratio(n_correct, len(pred))
    recall = _ratio(int(found.sum()), len(truth))
    det_recall = _ratio(int(found[detectable].sum()), int(detectable.sum()))
    return {
        "n_truth": len(truth),
        "n_truth_detectable": int(detectable.sum()),
        "n_pred": len(pred),
        "n_found": int(found.sum()),
        "n_found_detectable": int(found[detectable].sum()),
        "n_pred_correct": n_correct,
        "precision": _r(precision),
        "recall": _r(recall),
        "f1": _r(_f1(precision, recall)),
        "detectable_precision": _r(precision),
        "detectable_recall": _r(det_recall),
        "detectable_f1": _r(_f1(precision, det_recall)),
        **_first_year_scores(pairs, pred, truth),
    }


def score_clearings(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> dict:
    """Object scores by intersection, and area scores of the unions."""
    pairs = match_pairs(pred, truth, None)
    n_found = int(pairs["truth"].nunique())
    n_correct = int(pairs["pred"].nunique())
    precision, recall = _ratio(n_correct, len(pred)), _ratio(n_found, len(truth))
    crs = truth.crs if truth.crs is not None else pred.crs
    pred_union = shapely.union_all(_geoms(pred))
    truth_union = shapely.union_all(_geoms(truth))
    a_pred, a_truth, a_inter, a_union = _areas(
        [
            pred_union,
            truth_union,
            shapely.intersection(pred_union, truth_union),
            shapely.union(pred_union, truth_union),
        ],
        crs,
    )
    return {
        "n_truth": len(truth),
        "n_pred": len(pred),
        "n_found": n_found,
        "n_pred_correct": n_correct,
        "precision": _r(precision),
        "recall": _r(recall),
        "f1": _r(_f1(precision, recall)),
        "area_truth_m2": _r(a_truth, 1),
        "area_pred_m2": _r(a_pred, 1),
        "area_overlap_m2": _r(a_inter, 1),
        "area_iou": _r(_ratio(a_inter, a_union)),
        "area_precision": _r(_ratio(a_inter, a_pred)),
        "area_recall": _r(_ratio(a_inter, a_truth)),
        **_first_year_scores(pairs, pred, truth),
    }


def derive_sites(ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame, linkage_m: float) -> gpd.GeoDataFrame:
    """Truth sites: single-linkage clusters of ponds and clearings together, as the pipeline forms sites.

    Columns ``site_id`` (0..n-1), ``first_year`` (earliest member), ``n_members``; geometry = convex hull.
    """
    crs = ponds.crs if ponds.crs is not None else clearings.crs
    geoms = np.concatenate([_geoms(ponds), _geoms(clearings)])
    years = np.concatenate([ponds["first_year"].to_numpy(), clearings["first_year"].to_numpy()]).astype(int)
    if len(geoms) == 0:
        return gpd.GeoDataFrame(
            {"site_id": np.zeros(0, int), "first_year": np.zeros(0, int), "n_members": np.zeros(0, int)},
            geometry=gpd.GeoSeries([], crs=crs),
            crs=crs,
        )
    labels = link_sites(gpd.GeoSeries(geoms, crs=crs), linkage_m)
    order = np.argsort(labels, kind="stable")
    hulls = shapely.convex_hull(shapely.geometrycollections(geoms[order], indices=labels[order]))
    n = int(labels.max()) + 1
    first_year = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_year, labels, years)
    return gpd.GeoDataFrame(
        {"site_id": np.arange(n), "first_year": first_year, "n_members": np.bincount(labels, minlength=n)},
        geometry=hulls,
        crs=crs,
    )


def score_sites(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, match_distance_m: float = 20.0) -> dict:
    """Site precision/recall/F1 (buffered intersection), first-year accuracy, splits and merges."""
    half = match_distance_m / 2.0
    crs = truth.crs if truth.crs is not None else pred.crs
    pb = shapely.buffer(_geoms(pred), half)
    tb = shapely.buffer(_geoms(truth), half)
    ip, it = _query(tb, pb, "intersects")
    pairs = pd.DataFrame({"pred": ip, "truth": it})
    pairs["overlap"] = _areas(shapely.intersection(pb[ip], tb[it]), crs)
    pairs["dist"] = shapely.distance(_geoms(pred)[ip], _geoms(truth)[it])

    preds_per_truth = pairs.groupby("truth")["pred"].nunique()
    truths_per_pred = pairs.groupby("pred")["truth"].nunique()
    merging = truths_per_pred.index[truths_per_pred.to_numpy() > 1]
    n_found, n_correct = len(preds_per_truth), len(truths_per_pred)
    precision, recall = _ratio(n_correct, len(pred)), _ratio(n_found, len(truth))
    return {
        "n_truth": len(truth),
        "n_pred": len(pred),
        "n_found": n_found,
        "n_pred_correct": n_correct,
        "precision": _r(precision),
        "recall": _r(recall),
        "f1": _r(_f1(precision, recall)),
        "n_truth_split": int((preds_per_truth.to_numpy() > 1).sum()),
        "n_truth_merged": int(pairs.loc[pairs["pred"].isin(merging), "truth"].nunique()),
        "n_pred_merging": len(merging),
        **_first_year_scores(pairs, pred, truth),
    }


def score_yearly(
    summary: pd.DataFrame,
    truth_sites: gpd.GeoDataFrame,
    truth_ponds: gpd.GeoDataFrame,
    truth_clearings: gpd.GeoDataFrame,
) -> dict:
    """Cumulative truth site counts and footprint areas against the run's yearly summary."""
    crs = truth_sites.crs if truth_sites.crs is not None else truth_ponds.crs
    site_years = truth_sites["first_year"].to_numpy()
    geoms = np.concatenate([_geoms(truth_ponds), _geoms(truth_clearings)])
    geom_years = np.concatenate([truth_ponds["first_year"].to_numpy(), truth_clearings["first_year"].to_numpy()])

    rows, footprint = [], shapely.GeometryCollection()
    # union incrementally, one year's new features at a time, rather than re-unioning everything each year
    prev = None
    for year, rec in summary.iterrows():
        new = geom_years <= year if prev is None else (geom_years <= year) & (geom_years > prev)
        if new.any():
            footprint = shapely.union_all(np.concatenate([geoms[new], np.array([footprint], dtype=object)]))
        prev = year
        truth_sites_total = int((site_years <= year).sum())
        truth_area = float(_areas([footprint], crs)[0])
        run_sites, run_area = int(rec["sites_total"]), float(rec["footprint_total_m2"])
        row = {
            "year": int(year),
            "truth_sites_total": truth_sites_total,
            "run_sites_total": run_sites,
            "rel_error_sites": _r(_rel_error(run_sites, truth_sites_total)),
            "truth_footprint_m2": _r(truth_area, 1),
            "run_footprint_m2": _r(run_area, 1),
            "rel_error_footprint": _r(_rel_error(run_area, truth_area)),
        }
        if "provisional" in summary.columns:
            row["provisional"] = bool(rec["provisional"])
        rows.append(row)

    out = {"years": rows}
    for what in ("sites", "footprint"):
        errs = [abs(r[f"rel_error_{what}"]) for r in rows if r[f"rel_error_{what}"] is not None]
        out[f"max_abs_rel_error_{what}"] = _r(max(errs)) if errs else None
        out[f"mean_abs_rel_error_{what}"] = _r(float(np.mean(errs))) if errs else None
    return out


def score_confounders(
    confounders: gpd.GeoDataFrame, pred_ponds: gpd.GeoDataFrame, pred_clearings: gpd.GeoDataFrame
) -> dict:
    """Fraction of each confounder kind's area that the run mapped as mining."""
    crs = confounders.crs
    clearings = shapely.union_all(_geoms(pred_clearings))
    mining = shapely.union(clearings, shapely.union_all(_geoms(pred_ponds)))
    kinds = confounders["kind"].to_numpy()
    groups = {k: kinds == k for k in (*CLEARING_CONFOUNDERS, *WATER_CONFOUNDERS)}
    groups["all"] = np.isin(kinds, CLEARING_CONFOUNDERS)
    groups.update(
        {
            k: kinds == k
            for k in (*BUILT_CONFOUNDERS, *VALLEY_WATER_CONFOUNDERS, *VALLEY_BARE_CONFOUNDERS)
            if (kinds == k).any()
        }
    )
    out = {}
    for name, mask in groups.items():
        against = mining if name in AGAINST_MINING else clearings
        area = shapely.union_all(_geoms(confounders)[mask])
        a_conf, a_hit = _areas([area, shapely.intersection(area, against)], crs)
        out[name] = {
            "n": int(mask.sum()),
            "compared_with": "ponds+clearings" if name in AGAINST_MINING else "clearings",
            "area_m2": _r(a_conf, 1),
            "predicted_m2": _r(a_hit, 1),
            "fraction": _r(_ratio(a_hit, a_conf)),
        }
    return out


# ------------------------------------------------------------------------------------------------ helpers


def detectable_mask(truth_ponds: gpd.GeoDataFrame) -> np.ndarray:
    """Truth ponds a 10 m sensor can be held to: ``detectable`` where given, else open water >= 300 m2."""
    by_area = (
        (area_m2(truth_ponds.geometry) >= DETECTABLE_AREA_M2).to_numpy()
        if len(truth_ponds)
        else np.zeros(0, dtype=bool)
    )
    if "detectable" not in truth_ponds.columns:
        return by_area
    flag = truth_ponds["detectable"].map(_as_bool)
    return np.where(flag.isna().to_numpy(), by_area, flag.fillna(False).to_numpy(dtype=bool))


def match_pairs(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, centroid_distance_m: float | None) -> pd.DataFrame:
    """All matching (pred, truth) index pairs with their overlap area and centroid distance.

    A pair matches when the polygons intersect, or (if ``centroid_distance_m`` is given) when the
    predicted centroid lies within that distance of the truth polygon.
    """
    crs = truth.crs if truth.crs is not None else pred.crs
    pg, tg = _geoms(pred), _geoms(truth)
    ip, it = _query(tg, pg, "intersects")
    if centroid_distance_m is not None and len(pg) and len(tg):
        cp, ct = _query(tg, shapely.centroid(pg), "dwithin", centroid_distance_m)
        both = np.unique(np.concatenate([np.stack([ip, it]), np.stack([cp, ct])], axis=1), axis=1)
        ip, it = both[0], both[1]
    pairs = pd.DataFrame({"pred": ip, "truth": it})
    pairs["overlap"] = _areas(shapely.intersection(pg[ip], tg[it]), crs)
    pairs["dist"] = shapely.distance(shapely.centroid(pg[ip]), tg[it])
    return pairs


def _first_year_scores(pairs: pd.DataFrame, pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> dict:
    """First-year agreement of each matched truth feature with its best match (most overlap, then nearest)."""
    best = pairs.sort_values(
        ["truth", "overlap", "dist", "pred"], ascending=[True, False, True, True], kind="stable"
    ).drop_duplicates("truth")
    p_year = pred["first_year"].to_numpy()[best["pred"].to_numpy()].astype(int)
    t_year = truth["first_year"].to_numpy()[best["truth"].to_numpy()].astype(int)
    diff = p_year - t_year
    n = len(diff)
    return {
        "first_year_n": n,
        "first_year_exact": _r(_ratio(int((diff == 0).sum()), n)),
        "first_year_within_1": _r(_ratio(int((np.abs(diff) <= 1).sum()), n)),
        # positive = the run dates features later than truth (e.g. monsoon cloud delaying detection)
        "first_year_mean_error": _r(float(diff.mean())) if n else None,
    }


def _geoms(gdf: gpd.GeoDataFrame) -> np.ndarray:
    return np.asarray(gdf.geometry.values, dtype=object)


def _query(tree_geoms: np.ndarray, geoms: np.ndarray, predicate: str, distance: float | None = None):
    """(input index, tree index) pairs of an STRtree query; empty-safe."""
    if len(tree_geoms) == 0 or len(geoms) == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    tree = shapely.STRtree(tree_geoms)
    kw = {"distance": distance} if distance is not None else {}
    idx = tree.query(geoms, predicate=predicate, **kw)
    return idx[0].astype(np.intp), idx[1].astype(np.intp)


def _areas(geoms, crs) -> np.ndarray:
    """Areas through the project's one area function (projected CRS enforced there)."""
    return area_m2(gpd.GeoSeries(np.asarray(geoms, dtype=object), crs=crs)).to_numpy(dtype=float)


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None and recall is None:
        return None
    p, r = precision or 0.0, recall or 0.0
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _rel_error(run: float, truth: float) -> float | None:
    if truth == 0:
        return 0.0 if run == 0 else None
    return (run - truth) / truth


def _r(x: float | None, digits: int = 4) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return round(float(x), digits)


# ---------------------------------------------------------------------------------------------- formatting


def format_scores(scores: dict) -> str:
    """A compact human-readable table of :func:`evaluate`'s result."""

    def f(x):
        if x is None:
            return "-"
        if isinstance(x, float):
            return f"{x:.3f}"
        return str(x)

    def area(x):
        return "-" if x is None else f"{x / 1e4:,.2f}"

    lines = []
    inp = scores.get("inputs") or {}
    if inp:
        lines.append(
            f"run {inp.get('run')} vs truth {inp.get('truth')}  ({inp.get('first_year')}-"
            f"{inp.get('last_year')}, linkage {inp.get('linkage_m'):g} m, match {inp.get('match_distance_m'):g} m)"
        )
    head = f"{'class':<18}{'truth':>7}{'pred':>7}{'P':>8}{'R':>8}{'F1':>8}{'year=':>8}{'year±1':>8}"
    lines += [head, "-" * len(head)]

    def row(name, s, n_truth_key="n_truth", prefix="", years=True):
        lines.append(
            f"{name:<18}{f(s.get(n_truth_key)):>7}{f(s.get('n_pred')):>7}"
            f"{f(s.get(prefix + 'precision')):>8}{f(s.get(prefix + 'recall')):>8}{f(s.get(prefix + 'f1')):>8}"
            f"{f(s.get('first_year_exact')) if years else '':>8}"
            f"{f(s.get('first_year_within_1')) if years else '':>8}"
        )

    p, c, s = scores["ponds"], scores["clearings"], scores["sites"]
    row("ponds", p)
    row("ponds detectable", p, "n_truth_detectable", "detectable_", years=False)
    row("clearings", c)
    row("sites", s)
    lines.append(
        f"clearing area (ha): truth {area(c['area_truth_m2'])}, run {area(c['area_pred_m2'])}, "
        f"IoU {f(c['area_iou'])}, area P {f(c['area_precision'])}, area R {f(c['area_recall'])}"
    )
    lines.append(
        f"sites: {s['n_truth_split']} truth split, {s['n_truth_merged']} truth merged "
        f"(into {s['n_pred_merging']} run sites)"
    )

    y = scores["yearly"]
    lines += [
        "",
        f"{'year':<6}{'sites truth':>12}{'run':>6}{'rel.err':>9}{'footprint ha truth':>20}{'run':>10}{'rel.err':>9}",
    ]
    for r in y["years"]:
        mark = " (provisional)" if r.get("provisional") else ""
        lines.append(
            f"{r['year']:<6}{r['truth_sites_total']:>12}{r['run_sites_total']:>6}{f(r['rel_error_sites']):>9}"
            f"{area(r['truth_footprint_m2']):>20}{area(r['run_footprint_m2']):>10}"
            f"{f(r['rel_error_footprint']):>9}{mark}"
        )
    lines.append(
        f"max |rel.err|: sites {f(y['max_abs_rel_error_sites'])}, footprint {f(y['max_abs_rel_error_footprint'])}"
        f"; mean: sites {f(y['mean_abs_rel_error_sites'])}, footprint {f(y['mean_abs_rel_error_footprint'])}"
    )

    conf = scores.get("confounders")
    if conf:
        parts = [f"{k} {f(v['fraction'])}" for k, v in conf.items() if v["n"]]
        lines.append("confounder area mapped as mining: " + (", ".join(parts) if parts else "none labelled"))
    return "\n".join(lines)
