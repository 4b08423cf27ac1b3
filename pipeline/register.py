"""The site register: ids that last from run to run, and the analysts' verdicts.

A run numbers what it finds 1..n. The register (``<out>.register.gpkg`` beside the run dir) turns these
into ids that last. Each run's sites, ponds and clearings are matched by overlap to the register's:
a feature keeps the id of the registered one it overlaps most, and gets a fresh id, never used before,
otherwise. Nothing is deleted. A site no longer detected is ``quiet``; one absorbed into another is
``merged`` (with ``merged_into``); a site split off another records its ``parents``. Verdicts
(``review``: unreviewed / confirmed / rejected / uncertain, a note, a reviewer and a date) live on the
register's sites and follow the ids.

Verdicts are edited with ``python -m pipeline review`` or in QGIS, in the register or in the ``sites``
layer of a run's footprints.gpkg. The next run takes up edits made in either place. The register is
rewritten whole into a temporary file and renamed over the old one, under a lock: a killed update leaves
the previous register as it was.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from pipeline.errors import ConfigError, OutputError
from pipeline.export import fsync_dir, pid_alive
from pipeline.summary import REVIEW_STATUSES

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
VERDICT = ("review", "review_note", "reviewer", "reviewed_on")
SITE_COLUMNS = {  # column: default, in the order the register's sites layer shows them
    "site_id": 0,
    "status": "active",
    "review": "unreviewed",
    "review_note": "",
    "reviewer": "",
    "reviewed_on": "",
    "first_year": 0,
    "last_year": 0,
    "n_ponds": 0,
    "footprint_m2": 0.0,
    "first_run": "",
    "last_detected": "",
    "parents": "",
    "merged_into": 0,
    "review_at_last_run": "unreviewed",
    "exported_verdict": "",
}
FEATURE_COLUMNS = {"site_id": 0, "status": "active", "first_run": "", "last_detected": ""}
EVENT_COLUMNS = ["run", "site_id", "event", "related", "note"]


@dataclass
class Register:
    sites: gpd.GeoDataFrame
    ponds: gpd.GeoDataFrame
    clearings: gpd.GeoDataFrame
    events: pd.DataFrame
    next_id: dict[str, int]  # the next fresh id of each layer: one above any id ever given

    @property
    def empty(self) -> bool:
        return len(self.sites) == 0 and len(self.ponds) == 0 and len(self.clearings) == 0


def register_path(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.register.gpkg"


def _layer(columns: dict, id_col: str, crs) -> gpd.GeoDataFrame:
    cols = {id_col: 0, **columns}
    return gpd.GeoDataFrame({c: pd.Series(dtype=type(v)) for c, v in cols.items()}, geometry=[], crs=crs)


def empty_register(crs) -> Register:
    return Register(
        _layer(SITE_COLUMNS, "site_id", crs),
        _layer(FEATURE_COLUMNS, "pond_id", crs),
        _layer(FEATURE_COLUMNS, "clearing_id", crs),
        pd.DataFrame({c: pd.Series(dtype=str) for c in EVENT_COLUMNS}),
        {"site_id": 1, "pond_id": 1, "clearing_id": 1},
    )


def _with_columns(gdf: gpd.GeoDataFrame, columns: dict) -> gpd.GeoDataFrame:
    """``gdf`` with every column of ``columns`` (missing ones at their default, blanks filled) and any
    column an analyst added kept as it is."""
    for c, default in columns.items():
        if c not in gdf:
            gdf[c] = default
        elif isinstance(default, str):
            gdf[c] = gdf[c].fillna(default).astype(str)
        else:
            gdf[c] = gdf[c].fillna(default).astype(type(default))
    return gdf


def read_register(path: str | Path, crs) -> Register:
    """The register at ``path`` in ``crs``; an empty one if there is none yet. Registers written by
    earlier versions are brought up to this one's columns; a newer one is an error."""
    path = Path(path)
    if not path.is_file():
        return empty_register(crs)
    try:
        layers = {name for name, _ in pyogrio.list_layers(path)}
        meta = dict(pyogrio.read_dataframe(path, layer="meta").itertuples(index=False)) if "meta" in layers else {}
        version = int(meta.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise OutputError(
                f"{path} was written by a newer version of the pipeline (register schema {version}, this one "
                f"reads up to {SCHEMA_VERSION}): update the pipeline"
            )
        reg = empty_register(crs)
        for name, cols in (("sites", SITE_COLUMNS), ("ponds", FEATURE_COLUMNS), ("clearings", FEATURE_COLUMNS)):
            if name in layers:
                gdf = gpd.read_file(path, layer=name, engine="pyogrio").to_crs(crs)
                id_col = "site_id" if name == "sites" else name[:-1] + "_id"
                setattr(reg, name, _with_columns(gdf, {id_col: 0, **cols}))
        if "events" in layers:
            reg.events = pyogrio.read_dataframe(path, layer="events").fillna("").astype(str)
    except OutputError:
        raise
    except Exception as e:  # pyogrio/GDAL: a truncated or foreign file
        raise OutputError(f"site register {path} is unreadable ({e}): restore it from a backup or move it away") from e
    for col, layer in (("site_id", reg.sites), ("pond_id", reg.ponds), ("clearing_id", reg.clearings)):
        ever = int(layer[col].max()) + 1 if len(layer) else 1
        reg.next_id[col] = max(int(meta.get(f"next_{col}", 1)), ever)
    return _migrate(reg, version)


def _migrate(reg: Register, version: int) -> Register:
    """Bring a register of schema ``version`` up to this one. Schema 1 is the first; every later change
    adds a step here, and a test keeps a register of each older schema readable."""
    return reg


def write_register(path: str | Path, reg: Register) -> None:
    """Write ``reg`` to a temporary file beside ``path``, flush it, and rename it over ``path``."""
    path = Path(path)
    for old in path.parent.glob(f".{path.stem}.tmp-*.gpkg"):  # left by a killed update
        pid = old.stem.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            old.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.gpkg")
    meta = pd.DataFrame(
        {
            "key": ["schema_version", *(f"next_{k}" for k in reg.next_id)],
            "value": [str(SCHEMA_VERSION), *(str(v) for v in reg.next_id.values())],
        }
    )
    try:
        tmp.unlink(missing_ok=True)
        for name in ("sites", "ponds", "clearings"):
            layer = getattr(reg, name)
            layer.to_file(tmp, layer=name, driver="GPKG", engine="pyogrio", promote_to_multi=True)
        pyogrio.write_dataframe(reg.events.astype(str), tmp, layer="events", driver="GPKG")
        pyogrio.write_dataframe(meta, tmp, layer="meta", driver="GPKG")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def register_lock(path: str | Path):
    """Hold ``<register>.lock`` while the register is read, updated and written: a run and a
    ``review`` of the same AOI wait for each other instead of losing each other's changes."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- matching ---------------------------------------------------------------------------------------


def match_ids(
    prev_ids: np.ndarray, prev_geoms, geoms, tolerance_m: float, next_id: int
) -> tuple[np.ndarray, list[tuple[int, ...]], dict[int, int], int]:
    """Ids for the geometries ``geoms`` of this run, from the registered ones (``prev_ids``, ``prev_geoms``).

    Overlap is measured between the geometries grown by ``tolerance_m``, so a one-pixel pond shifted
    by misregistration still meets itself. The pairs are taken largest overlap first: each registered
    id goes to at most one geometry, the one it overlaps most. A geometry left without an id gets
    ``next_id``, ``next_id + 1``, ... in order. Returns ``(ids, parents, absorbed, next_id)``:
    ``parents[i]`` the registered ids geometry ``i`` overlaps (sorted), and ``absorbed`` the registered
    ids that overlap a geometry which kept another id (a merge), mapped to that geometry's index.
    """
    n = len(geoms)
    ids = np.zeros(n, dtype=np.int64)
    parents: list[tuple[int, ...]] = [() for _ in range(n)]
    absorbed: dict[int, int] = {}
    geoms = np.asarray(geoms)
    prev_geoms = np.asarray(prev_geoms)
    if n and len(prev_geoms):
        tree = shapely.STRtree(prev_geoms)
        cur, prev = tree.query(geoms, predicate="dwithin", distance=2 * tolerance_m)
        weight = shapely.area(
            shapely.intersection(shapely.buffer(geoms[cur], tolerance_m), shapely.buffer(prev_geoms[prev], tolerance_m))
        )
        order = np.lexsort((cur, prev_ids[prev], -weight))
        taken: set[int] = set()
        best: dict[int, int] = {}
        for k in order:
            c, p = int(cur[k]), int(prev_ids[prev[k]])
            parents[c] = tuple(sorted({*parents[c], p}))
            best.setdefault(p, c)
            if ids[c] == 0 and p not in taken:
                ids[c] = p
                taken.add(p)
        absorbed = {p: c for p, c in best.items() if p not in taken}
    for i in np.flatnonzero(ids == 0):
        ids[i] = next_id
        next_id += 1
    return ids, parents, absorbed, next_id


def site_footprints(sites, ponds, clearings) -> np.ndarray:
    """Each site's footprint: the union of its ponds and clearings (its hull where it has none)."""
    members = pd.concat([ponds[["site_id", "geometry"]], clearings[["site_id", "geometry"]]], ignore_index=True)
    groups = members.groupby("site_id").indices
    geoms = members.geometry.values
    return np.array(
        [
            shapely.union_all(geoms[groups[s]]) if s in groups else g
            for s, g in zip(sites["site_id"].to_numpy(), sites.geometry.values)
        ],
        dtype=object,
    )


# --- a run's update ---------------------------------------------------------------------------------


def _verdict_json(row) -> str:
    return json.dumps([str(row[c]) for c in VERDICT])


def _review_status(value, note: str) -> tuple[str, str]:
    """A status typed by an analyst, as one of REVIEW_STATUSES. An unknown word is kept, in the note,
    and the status becomes ``uncertain``: an edit is never dropped for a typo."""
    word = str(value or "").strip().lower()
    if word in REVIEW_STATUSES:
        return word, note
    if not word:
        return "unreviewed", note
    return "uncertain", f"entered as {str(value)!r}" + (f"; {note}" if note else "")


def take_up_edits(reg: Register, exported: pd.DataFrame | None, today: date) -> list[int]:
    """Apply to ``reg`` the verdicts an analyst edited in a run's ``sites`` layer (``exported``): those
    that differ from what the run wrote there. Where the register was edited too, the later date wins.
    Returns the ids whose verdict was taken up."""
    if exported is None or not len(exported) or "review" not in exported:
        return []
    rows = reg.sites.set_index("site_id")
    taken = []
    for rec in exported.to_dict("records"):
        sid = int(rec["site_id"])
        if sid not in rows.index:
            continue
        edit = {c: "" if pd.isna(rec.get(c)) else str(rec.get(c)) for c in VERDICT}
        written = rows.at[sid, "exported_verdict"]
        if not written or json.dumps([edit[c] for c in VERDICT]) == written:
            continue
        current = rows.loc[sid]
        edited_here = _verdict_json(current) != written
        if edited_here and str(current["reviewed_on"]) > edit["reviewed_on"]:
            log.warning("site %d: verdict edited in the register and in a run's layer; the register's is later", sid)
            continue
        edit["review"], edit["review_note"] = _review_status(edit["review"], edit["review_note"])
        edit["reviewed_on"] = edit["reviewed_on"] or today.isoformat()
        for c in VERDICT:
            rows.at[sid, c] = edit[c]
        taken.append(sid)
    reg.sites = gpd.GeoDataFrame(rows.reset_index(), geometry="geometry", crs=reg.sites.crs)
    return taken


def _feature_rows(registered: gpd.GeoDataFrame, layer: gpd.GeoDataFrame, id_col: str, run_id: str):
    """The register's layer of ponds or clearings after a run: detected ones updated or added, the others quiet."""
    seen = layer[[id_col, "site_id", "geometry"]].assign(status="active", last_detected=run_id)
    old = registered[~registered[id_col].isin(seen[id_col])].copy()
    old.loc[old["status"] == "active", "status"] = "quiet"
    first = dict(zip(registered[id_col], registered["first_run"]))
    seen["first_run"] = [first.get(i, run_id) for i in seen[id_col]]
    out = pd.concat([old, seen], ignore_index=True).sort_values(id_col).reset_index(drop=True)
    return _with_columns(gpd.GeoDataFrame(out, geometry="geometry", crs=layer.crs), {id_col: 0, **FEATURE_COLUMNS})


def _inherited_verdict(reg_sites: pd.DataFrame, parents: tuple[int, ...]) -> dict:
    """A site split off others takes their verdict when they agree on one (a rejected area stays
    rejected when it breaks in two)."""
    verdicts = reg_sites.loc[reg_sites["site_id"].isin(parents), list(VERDICT)].drop_duplicates()
    if len(verdicts) == 1 and verdicts["review"].iat[0] != "unreviewed":
        return verdicts.iloc[0].to_dict()
    return {}


def _site_rows(reg: Register, sites, geoms, ids, parents, absorbed, run_id: str) -> list[dict]:
    """The register's sites after a run, and the run's events (appended to ``reg.events``)."""
    old = {int(r["site_id"]): r for r in reg.sites.to_dict("records")}
    events = []
    detected = set(int(i) for i in ids)
    for i, sid in enumerate(int(s) for s in ids):
        now = {
            "status": "active",
            "first_year": int(sites["first_year"].iat[i]),
            "last_year": int(sites["last_year"].iat[i]),
            "n_ponds": int(sites["n_ponds"].iat[i]),
            "footprint_m2": float(sites["footprint_m2"].iat[i]),
            "last_detected": run_id,
            "geometry": geoms[i],
        }
        if sid in old:
            if old[sid]["status"] == "quiet":
                events.append((sid, "redetected", "", ""))
            old[sid].update(now)
            continue
        family = parents[i]  # the registered sites it overlaps, each continued by another site or merged
        row = {**SITE_COLUMNS, **now, "site_id": sid, "first_run": run_id, "parents": ",".join(map(str, family))}
        row.update(_inherited_verdict(reg.sites, tuple(family)))
        old[sid] = row
        events.append((sid, "split" if family else "new", ",".join(map(str, family)), ""))
    for p, c in sorted(absorbed.items()):
        old[p].update(status="merged", merged_into=int(ids[c]))
        events.append((int(ids[c]), "merged", str(p), f"site {p} merged into {int(ids[c])}"))
    for sid, row in old.items():
        if row["status"] == "active" and sid not in detected:
            row["status"] = "quiet"
            events.append((sid, "quiet", "", "not detected in this run"))
    new_events = pd.DataFrame([(run_id, str(s), e, r, n) for s, e, r, n in events], columns=EVENT_COLUMNS)
    reg.events = pd.concat([reg.events, new_events], ignore_index=True) if len(reg.events) else new_events
    return [old[s] for s in sorted(old)]


def update_register(reg: Register, ponds, clearings, sites, run_id: str, tolerance_m: float):
    """Match a run's features (numbered 1..n by the run) to the register; returns the register after
    the run and the layers with register ids, the sites with their verdicts. Pure: nothing is written."""
    ponds, clearings, sites = ponds.copy(), clearings.copy(), sites.copy()
    for layer, name, id_col in ((ponds, "ponds", "pond_id"), (clearings, "clearings", "clearing_id")):
        known = getattr(reg, name)
        layer[id_col], _, _, reg.next_id[id_col] = match_ids(
            known[id_col].to_numpy(), known.geometry.values, layer.geometry.values, tolerance_m, reg.next_id[id_col]
        )
    live = reg.sites[reg.sites["status"] != "merged"]
    geoms = site_footprints(sites, ponds, clearings)
    ids, parents, absorbed, reg.next_id["site_id"] = match_ids(
        live["site_id"].to_numpy(), live.geometry.values, geoms, tolerance_m, reg.next_id["site_id"]
    )
    remap = dict(zip(sites["site_id"].to_numpy(), ids))
    for layer in (ponds, clearings):
        layer["site_id"] = layer["site_id"].map(remap).astype(np.int64)
    sites["site_id"] = ids
    rows = _site_rows(reg, sites, geoms, ids, parents, absorbed, run_id)
    reg.sites = (
        _with_columns(gpd.GeoDataFrame(rows, geometry="geometry", crs=sites.crs), SITE_COLUMNS)
        if rows
        else _layer(SITE_COLUMNS, "site_id", sites.crs)
    )
    reg.ponds = _feature_rows(reg.ponds, ponds, "pond_id", run_id)
    reg.clearings = _feature_rows(reg.clearings, clearings, "clearing_id", run_id)
    verdicts = reg.sites.set_index("site_id").loc[ids, list(VERDICT)]
    for c in VERDICT:
        sites[c] = verdicts[c].to_numpy()
    exported = {int(s): _verdict_json(r) for s, r in zip(ids, verdicts.to_dict("records"))}
    reg.sites["exported_verdict"] = [
        exported.get(int(s), e) for s, e in zip(reg.sites["site_id"], reg.sites["exported_verdict"])
    ]
    reg.sites["review_at_last_run"] = reg.sites["review"]
    return reg, _by(ponds, "pond_id"), _by(clearings, "clearing_id"), _by(sites, "site_id")


def _by(gdf, col: str):
    return gdf.sort_values(col, kind="stable").reset_index(drop=True)


def exported_sites(run_dir: str | Path) -> pd.DataFrame | None:
    """The ``sites`` layer of a run dir's footprints.gpkg as an analyst may have left it (no geometry)."""
    gpkg = Path(run_dir) / "footprints.gpkg"
    if not gpkg.is_file():
        return None
    try:
        return pyogrio.read_dataframe(gpkg, layer="sites", read_geometry=False)
    except Exception as e:  # a run dir being edited or damaged must not stop the next run
        log.warning(
            "could not read the verdicts in %s (%s): edits made there since the last run are not taken up", gpkg, e
        )
        return None


def seed_from_run(run_dir: str | Path, crs) -> Register | None:
    """A register holding the ids of a run made before there was one, so its ids go on; None without a run."""
    gpkg, manifest = Path(run_dir) / "footprints.gpkg", Path(run_dir) / "run.json"
    if not gpkg.is_file() or not manifest.is_file():
        return None
    run_id = str(json.loads(manifest.read_text()).get("created", ""))
    layers = {n: gpd.read_file(gpkg, layer=n, engine="pyogrio").to_crs(crs) for n in ("sites", "ponds", "clearings")}
    reg = empty_register(crs)
    sites = layers["sites"]
    keep = ["site_id", "first_year", "last_year", "n_ponds", "footprint_m2", *(c for c in VERDICT if c in sites)]
    rows = sites[keep].assign(status="active", first_run=run_id, last_detected=run_id)
    geoms = site_footprints(sites, layers["ponds"], layers["clearings"])
    reg.sites = _with_columns(gpd.GeoDataFrame(rows, geometry=list(geoms), crs=crs), SITE_COLUMNS)
    # the verdicts the run dir carries are the register's from now on
    reg.sites["review_at_last_run"] = reg.sites["review"]
    reg.sites["exported_verdict"] = [_verdict_json(r) for r in reg.sites.to_dict("records")]
    for name, id_col in (("ponds", "pond_id"), ("clearings", "clearing_id")):
        layer = layers[name][[id_col, "site_id", "geometry"]].assign(
            status="active", first_run=run_id, last_detected=run_id
        )
        setattr(reg, name, _with_columns(layer, {id_col: 0, **FEATURE_COLUMNS}))
    for col, layer in (("site_id", reg.sites), ("pond_id", reg.ponds), ("clearing_id", reg.clearings)):
        reg.next_id[col] = int(layer[col].max()) + 1 if len(layer) else 1
    log.info("site register started from the ids of the run in %s", run_dir)
    return reg


def set_verdict(
    path: str | Path, site_id: int, review: str, note: str | None, reviewer: str, today: date, crs=None
) -> dict:
    """Record an analyst's verdict on one site of the register at ``path``; returns the site's row."""
    if review not in REVIEW_STATUSES:
        raise ConfigError(f"--status {review!r} is not a verdict: use one of {', '.join(REVIEW_STATUSES)}")
    path = Path(path)
    _require(path)
    with register_lock(path):
        reg = read_register(path, crs or pyogrio.read_info(path, layer="sites")["crs"])
        hit = reg.sites.index[reg.sites["site_id"] == site_id]
        if not len(hit):
            raise ConfigError(
                f"site {site_id} is not in the register {path} (ids {reg.sites['site_id'].min()}.."
                f"{reg.sites['site_id'].max()}): `review --list` shows them"
            )
        i = hit[0]
        reg.sites.loc[i, list(VERDICT)] = [
            review,
            reg.sites.at[i, "review_note"] if note is None else note,
            reviewer,
            today.isoformat(),
        ]
        reg.events = pd.concat(
            [
                reg.events,
                pd.DataFrame([[today.isoformat(), str(site_id), "verdict", review, note or ""]], columns=EVENT_COLUMNS),
            ],
            ignore_index=True,
        )
        write_register(path, reg)
    return reg.sites.loc[i].drop("geometry").to_dict()


def _require(path: Path) -> None:
    if not path.is_file():
        raise OutputError(f"no site register at {path}: run the AOI first (the register is written beside its run dir)")


def read_sites(path: str | Path) -> pd.DataFrame:
    """The register's sites, without geometry (for listing)."""
    path = Path(path)
    _require(path)
    return pyogrio.read_dataframe(path, layer="sites", read_geometry=False)


def is_register(path: str | Path) -> bool:
    """Whether ``path`` is a site register (rather than a file of labelled polygons)."""
    try:
        return {"sites", "meta"} <= {name for name, _ in pyogrio.list_layers(path)}
    except Exception:  # not a GeoPackage, or unreadable: not a register
        return False


def verdict_labels(path: str | Path, crs, margin_m: float = 50.0) -> dict[str, gpd.GeoDataFrame]:
    """Training labels from analysts' verdicts: the ponds and clearings of confirmed sites (positives),
    and ``reviewed``, the areas whose every pixel is labelled, the confirmed and rejected sites'
    footprints grown by ``margin_m``. Whatever a rejected site holds is a negative; unreviewed sites
    are left out, neither mine nor not."""
    reg = read_register(path, crs)
    sites = reg.sites[reg.sites["review"].isin(["confirmed", "rejected"])]
    confirmed = set(sites.loc[sites["review"] == "confirmed", "site_id"])
    if not len(sites) or not confirmed:
        raise ConfigError(
            f"the register {path} has {len(confirmed)} confirmed and {len(sites) - len(confirmed)} rejected "
            "sites: training needs both kinds; review some sites first (`pipeline review`)"
        )
    years = reg.sites.set_index("site_id")["first_year"]
    layers = {}
    for name in ("ponds", "clearings"):
        layer = getattr(reg, name)
        layer = layer[layer["site_id"].isin(confirmed)].copy()
        layer["first_year"] = years.reindex(layer["site_id"]).to_numpy()
        layers[name] = layer
    reviewed = gpd.GeoDataFrame(geometry=sites.geometry.buffer(margin_m).values, crs=crs)
    return {**layers, "reviewed": reviewed}
