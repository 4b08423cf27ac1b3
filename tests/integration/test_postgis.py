"""PostGIS export against a real PostgreSQL with PostGIS (``.ci/run`` starts one on loopback and sets
KACHIN_TEST_PG_DSN): successive exports upsert, a failing or killed export leaves the database as it
was, areas match the GeoPackage's, the styles are in layer_styles, and no password reaches the log."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import geopandas as gpd
import pytest

from pipeline import export, postgis
from pipeline.errors import OutputError
from tests.support import edit_attributes

DSN = os.environ.get("KACHIN_TEST_PG_DSN")
if not DSN:
    if os.environ.get("CI"):
        raise RuntimeError("CI must provide a PostGIS database: .ci/run sets KACHIN_TEST_PG_DSN")
    pytest.skip("no PostGIS database: set KACHIN_TEST_PG_DSN (as .ci/run does)", allow_module_level=True)
psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def schema():
    name = f"t_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        conn.execute("DELETE FROM public.layer_styles WHERE f_table_schema = %s", (name,))


def state(schema: str) -> dict:
    """Every table's rows, as a comparable snapshot."""
    out = {}
    with psycopg.connect(DSN) as conn:
        for table in [*postgis.KEYS, postgis.SUMMARY_TABLE]:
            try:
                rows = conn.execute(f"SELECT * FROM {schema}.{table} ORDER BY 1, 2").fetchall()
            except psycopg.errors.UndefinedTable:
                conn.rollback()
                rows = None
            out[table] = rows
    return out


def test_successive_exports_upsert_and_keep_the_geopackages_areas(simulated_run, schema, tmp_path):
    _, _, result = simulated_run
    run_dir = tmp_path / "run"
    shutil.copytree(result.out, run_dir)
    first = postgis.export_run(run_dir, DSN, schema)
    layers = {n: gpd.read_file(run_dir / export.GPKG, layer=n) for n in postgis.KEYS}
    assert first == {**{n: len(v) for n, v in layers.items()}, "yearly_summary": len(pd_rows(run_dir))}
    # an analyst's verdict, as QGIS writes it into the run's GeoPackage, then the next export
    site = int(layers["sites"]["site_id"].iloc[0])
    edit_attributes(run_dir / export.GPKG, "UPDATE sites SET review = 'rejected' WHERE site_id = ?", site)
    postgis.export_run(run_dir, DSN, schema)
    with psycopg.connect(DSN) as conn:
        for name, layer in layers.items():
            n, area, srid = conn.execute(
                f"SELECT count(*), sum(ST_Area(geom)), min(ST_SRID(geom)) FROM {schema}.{name}"
            ).fetchone()
            assert n == len(layer)  # updated, not duplicated
            assert area == pytest.approx(layer.area.sum(), rel=1e-9)
            assert srid == layer.crs.to_epsg()
        assert conn.execute(f"SELECT review FROM {schema}.sites WHERE site_id = %s", (site,)).fetchone() == (
            "rejected",
        )
        styles = conn.execute(
            "SELECT f_table_name, styleqml::text LIKE '%%<qgis%%' FROM public.layer_styles WHERE f_table_schema = %s "
            "AND useasdefault ORDER BY 1",
            (schema,),
        ).fetchall()
    assert styles == [("clearings", True), ("ponds", True), ("sites", True)]


def pd_rows(run_dir):
    import pandas as pd

    return pd.read_csv(run_dir / export.SUMMARY)


def test_a_failing_export_leaves_the_database_as_it_was(simulated_run, schema, monkeypatch):
    _, _, result = simulated_run
    postgis.export_run(result.out, DSN, schema)
    before = state(schema)
    real = postgis.upsert

    def fail_on_clearings(cur, schema_, name, *args):
        if name == "clearings":
            raise RuntimeError("disk full on the server")
        return real(cur, schema_, name, *args)

    monkeypatch.setattr(postgis, "upsert", fail_on_clearings)
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {schema}.sites")  # what the failed export would have put back
    emptied = state(schema)
    with pytest.raises(RuntimeError):
        postgis.export_run(result.out, DSN, schema)
    assert state(schema) == emptied != before


def test_a_killed_export_leaves_the_database_as_it_was(simulated_run, schema, tmp_path):
    _, _, result = simulated_run
    postgis.export_run(result.out, DSN, schema)
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.sites SET run_created = 'before'")
    before = state(schema)
    marker = tmp_path / "in-transaction"
    script = f"""
import pathlib, time
from pipeline import postgis
real = postgis.write_styles
def slow(*args):
    real(*args)
    pathlib.Path({str(marker)!r}).touch()
    time.sleep(60)
postgis.write_styles = slow
postgis.export_run({str(result.out)!r}, {DSN!r}, {schema!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    for _ in range(300):
        if marker.exists():
            break
        time.sleep(0.1)
    assert marker.exists(), "the export never reached its last step"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the server notices the dropped connection and rolls back
    assert state(schema) == before


def test_credentials_are_never_logged_and_a_bad_server_is_one_line(simulated_run, caplog):
    _, _, result = simulated_run
    with pytest.raises(OutputError) as e:
        postgis.export_run(result.out, "postgresql://watch:s3cret-pw@127.0.0.1:1/none?connect_timeout=2", "x")
    assert "s3cret-pw" not in str(e.value) and "s3cret-pw" not in caplog.text
    assert "\n" not in str(e.value) and "left as it was" in str(e.value)
    assert "s3cret" not in postgis.safe_dsn("host=db user=a password=s3cret dbname=m")


def test_the_command_line_exports_and_monthly_runs_publish(simulated_run, tmp_path, cli):
    sim, _, result = simulated_run
    code, out, err = cli("export", "--run", result.out, "--to", "postgis", "--dsn", DSN, "--schema", "t_cli")
    assert code == 0, err
    assert "t_cli.sites:" in out
    code, _, err = cli("export", "--run", result.out, "--to", "postgis")
    assert code == 2 and "needs both --to postgis and --dsn" in err
    args = ["monthly", "--aoi", sim.aoi, "--source", "local", "--catalog", sim.catalog, "--start", sim.start]
    args += ["--out", tmp_path / "m", "--today", sim.end, "--postgis", DSN, "--quiet"]
    try:
        code, _, err = cli(*args)
        assert code == 0, err
        with psycopg.connect(DSN) as conn:
            aoi = export.read_manifest(tmp_path / "m")["aoi"]
            n = conn.execute("SELECT count(*) FROM kachin.sites WHERE aoi = %s", (aoi,)).fetchone()[0]
        assert n == len(gpd.read_file(tmp_path / "m" / export.GPKG, layer="sites"))
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            for name in ("t_cli", "kachin"):
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
                conn.execute("DELETE FROM public.layer_styles WHERE f_table_schema = %s", (name,))


def test_a_table_of_another_layout_is_refused_in_one_line(simulated_run, schema):
    _, _, result = simulated_run
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.ponds (aoi text, pond_id bigint)")  # no key to upsert on
    with pytest.raises(OutputError) as e:
        postgis.export_run(result.out, DSN, schema)
    assert "was refused" in str(e.value) and "\n" not in str(e.value)
    assert state(schema)["sites"] is None  # the sites, upserted before the ponds, were rolled back
