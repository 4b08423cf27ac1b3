"""A run's sites, ponds, clearings and yearly summary upserted into a PostGIS schema, for teams that keep
their layers in a database (``export --to postgis --dsn ...``, ``monthly --postgis DSN``).

Rows are keyed by AOI and register id (``site_id``, ``pond_id``, ``clearing_id``; ``year`` for the
summary): a later run of the AOI updates its rows, and a site no longer detected keeps its last row, as
in the register. Everything happens in one transaction, so an export that fails or is killed leaves the
database as it was. Geometries keep the run's CRS (the AOI's UTM zone), so areas in the database are
the GeoPackage's. The layers' QGIS styles go into the database's ``public.layer_styles``, where QGIS
looks for them, so the layers open styled. Credentials come from the DSN, the PG* environment or
``~/.pgpass`` (libpq reads them) and are never logged."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline import export
from pipeline.errors import OutputError
from pipeline.extras import require

log = logging.getLogger(__name__)

KEYS = {"sites": "site_id", "ponds": "pond_id", "clearings": "clearing_id"}
SUMMARY_TABLE = "yearly_summary"
# QGIS's own layout of the table it reads a layer's default style from
LAYER_STYLES = """CREATE TABLE IF NOT EXISTS public.layer_styles (
    id serial PRIMARY KEY, f_table_catalog varchar, f_table_schema varchar, f_table_name varchar,
    f_geometry_column varchar, stylename text, styleqml xml, stylesld xml, useasdefault boolean,
    description text, owner varchar(63) DEFAULT CURRENT_USER, ui xml,
    update_time timestamp DEFAULT CURRENT_TIMESTAMP, type varchar)"""


def safe_dsn(dsn: str) -> str:
    """The DSN as it may be logged: without its password."""
    psycopg = require("psycopg", "postgis", "export to PostGIS")
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(a DSN that does not parse)"
    parts.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in parts.items() if v is not None})


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def sql_type(dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double precision"
    return "text"


def _records(table: pd.DataFrame) -> list[tuple]:
    """Rows as Python values (None for missing), geometry as WKB."""
    columns = []
    for name in table.columns:
        values = table[name]
        if isinstance(values.dtype, gpd.array.GeometryDtype):
            columns.append([None if g is None else shapely.to_wkb(g) for g in values])
        else:
            columns.append([None if pd.isna(v) else (v.item() if isinstance(v, np.generic) else v) for v in values])
    return list(zip(*columns))


def upsert(cur, schema: str, name: str, table: pd.DataFrame, key: list[str], srid: int | None) -> int:
    """Create ``schema.name`` for ``table``'s columns (adding any new ones) and upsert its rows on ``key``."""
    from psycopg import sql

    ident = sql.Identifier(schema, name)
    cols = []
    for c in table.columns:
        kind = f"geometry(Geometry, {srid})" if c == "geometry" else sql_type(table[c].dtype)
        cols.append(sql.SQL("{} {}").format(sql.Identifier("geom" if c == "geometry" else c), sql.SQL(kind)))
    cur.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
            ident, sql.SQL(", ").join(cols), sql.SQL(", ").join(map(sql.Identifier, key))
        )
    )
    for col in cols:
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}").format(ident, col))
    names = ["geom" if c == "geometry" else c for c in table.columns]
    values = [
        sql.SQL("ST_GeomFromWKB({}, {})").format(sql.Placeholder(), sql.Literal(srid))
        if n == "geom"
        else sql.Placeholder()
        for n in names
    ]
    updates = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names if n not in key]
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
        ident,
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(values),
        sql.SQL(", ").join(map(sql.Identifier, key)),
        sql.SQL(", ").join(updates),
    )
    rows = _records(table)
    if rows:
        cur.executemany(statement, rows)
    return len(rows)


def _styles(gpkg: Path) -> dict[str, tuple[str, str]]:
    """Each layer's default QGIS style (QML, SLD) as the run's GeoPackage holds it."""
    with sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT f_table_name, styleQML, styleSLD FROM layer_styles WHERE useAsDefault").fetchall()
    return {name: (qml, sld) for name, qml, sld in rows}


def write_styles(cur, schema: str, styles: dict[str, tuple[str, str]]) -> None:
    """The layers' default styles into ``public.layer_styles``, replacing this schema's earlier ones."""
    cur.execute(LAYER_STYLES)
    for name, (qml, sld) in styles.items():
        cur.execute(
            "DELETE FROM public.layer_styles"
            " WHERE f_table_schema = %s AND f_table_name = %s AND f_geometry_column = 'geom'",
            (schema, name),
        )
        cur.execute(
            "INSERT INTO public.layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column,"
            " stylename, styleqml, stylesld, useasdefault, description, type)"
            " VALUES (current_database(), %s, %s, 'geom', %s, %s::xml, %s::xml, true, %s, 'Polygon')",
            (schema, name, name, qml, sld, "kachin-ree-watch default style"),
        )


def export_run(run_dir: Path, dsn: str, schema: str = "kachin") -> dict[str, int]:
    """Upsert a finished run's layers and yearly summary into ``schema``, in one transaction; returns the
    rows written per table."""
    psycopg = require("psycopg", "postgis", "export to PostGIS")
    run_dir = Path(run_dir)
    manifest = export.read_manifest(run_dir)
    aoi = manifest["aoi"]
    gpkg = run_dir / export.GPKG
    layers = {name: gpd.read_file(gpkg, layer=name) for name in KEYS}
    srid = layers["sites"].crs.to_epsg()
    summary = pd.read_csv(run_dir / export.SUMMARY)
    summary["aoi"] = aoi
    written = {}
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'")
            if cur.fetchone() is None:
                raise OutputError(f"the database of {safe_dsn(dsn)} has no PostGIS: run CREATE EXTENSION postgis in it")
            cur.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(psycopg.sql.Identifier(schema)))
            for name, key in KEYS.items():
                table = layers[name].copy()
                table.insert(0, "aoi", aoi)
                table["run_created"] = manifest["created"]
                written[name] = upsert(cur, schema, name, table, ["aoi", key], srid)
            written[SUMMARY_TABLE] = upsert(cur, schema, SUMMARY_TABLE, summary, ["aoi", "year"], None)
            write_styles(cur, schema, _styles(gpkg))
    except psycopg.OperationalError as e:
        raise OutputError(
            f"cannot export to PostGIS at {safe_dsn(dsn)} ({_first_line(e)}): check the DSN, the server and the "
            "credentials (PGPASSWORD or ~/.pgpass); the database was left as it was"
        ) from None
    except psycopg.Error as e:  # refused by the database (rights, a table of another layout): nothing written
        raise OutputError(
            f"the PostGIS export to {safe_dsn(dsn)}, schema {schema}, was refused ({_first_line(e)}); "
            "the database was left as it was"
        ) from None
    log.info("exported %s to PostGIS %s, schema %s: %s", aoi, safe_dsn(dsn), schema, written)
    return written
