"""Bad configs and bad catalogs: a one-line error with the fix, or a scene skipped with its reason;
never a traceback, never a silently misread scene, never a gap year reported as zero mining."""

import json
import math
import shutil
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import rasterio

from pipeline import run as run_module
from pipeline.run import run
from tests.support import (
    FOREST,
    LATERITE,
    assert_one_line_error,
    catalog_config,
    run_args,
    run_checker,
    uniform,
    write_aoi_file,
    write_catalog,
)


def _item_json(f, i):
    return sorted((f["root"] / "cat" / "sentinel-2-l2a").glob("*/*.json"))[i]


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--start", "2021-02-30"], ["period.start", "day value is outside", "YYYY-MM-DD"]),
        (["--end", "2023-13-01"], ["period.end", "month value", "YYYY-MM-DD"]),
        (["--set", "compute.chunk_px=abc"], ["compute.chunk_px", "valid integer"]),
        (["--set", "compute.chunk_px=8"], ["compute.chunk_px", "greater than or equal to 64"]),
        (["--set", "ponds=3"], ["'ponds'", "valid dictionary"]),
        (["--set", "source.max_cloud_cover=150"], ["max_cloud_cover", "less than or equal to 100"]),
        (["--set", "mask.invalid_scl=[a, b]"], ["mask.invalid_scl.0", "1 more"]),
        (["--set", "resolution=30"], ["resolution must be 10 or 20"]),
        (["--set", "name=[a"], ["not valid YAML", "quote it"]),
        (["--set", "nonsense"], ["not KEY=VALUE"]),
    ],
)
def test_bad_config_values_on_the_command_line(cli, tiny_catalog, extra, words):
    code, _, err = cli(*run_args(tiny_catalog), *extra)
    assert_one_line_error(code, err, *words)
    assert code == 2 and not (tiny_catalog["root"] / "run").exists()


@pytest.mark.parametrize(
    "text,words",
    [
        ("aoi: a.geojson\nperiod: {start: 2021-02-30, end: 2021-12-31}\n", ["period.start", "YYYY-MM-DD"]),
        ("aoi: a.geojson\nperiod: {start: 2021-01-01, end: 2021-12-31}\ncompute: {workers: 0}\n", ["compute.workers"]),
        (
            "aoi: a.geojson\nperiod: {start: 2021-01-01, end: 2021-12-31}\nponds: {mndwi_min: high}\n",
            ["ponds.mndwi_min"],
        ),
        ("aoi: a.geojson\nperiod: 2021\n", ["'period'"]),
        ("- a\n- b\n", ["YAML mapping"]),
        ("aoi: [unclosed\n", ["not valid YAML"]),
        (b"\xff\xfe bad", ["not UTF-8"]),
    ],
)
def test_bad_config_files(cli, tmp_path, text, words):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, _, err = cli("run", "--config", cfg)
    assert_one_line_error(code, err, *words)


def _retype(tif, dtype):
    with rasterio.open(tif) as src:
        data, profile = src.read(1), src.profile
    profile.update(dtype=dtype, nodata=None)
    tif.unlink()
    with rasterio.open(tif, "w", **profile) as dst:
        dst.write((data * 1e-4).astype(dtype), 1)


def test_bad_items_are_skipped_each_with_its_reason(tiny_catalog):
    f = tiny_catalog
    items = [_item_json(f, i) for i in (2, 5, 8, 11, 14)]
    docs = [json.loads(p.read_text()) for p in items]
    # 1. a float32 reflectance product, declared as such
    docs[0]["assets"]["red"]["raster:bands"][0]["data_type"] = "float32"
    _retype(items[0].parent / docs[0]["assets"]["red"]["href"], "float32")
    # 2. declared uint16, but the file is float32: caught from the file's header
    _retype(items[1].parent / docs[1]["assets"]["nir"]["href"], "float32")
    # 3. NaN nodata on a uint16 band
    docs[2]["assets"]["green"]["raster:bands"][0]["nodata"] = math.nan
    # 4. a missing asset
    del docs[3]["assets"]["swir16"]
    for p, d in zip(items, docs):
        p.write_text(json.dumps(d))
    # 5. the same item id twice (a second copy linked from the collection)
    dup = items[4].parent.parent / "copy" / items[4].name
    dup.parent.mkdir()
    doc = json.loads(items[4].read_text())
    for a in doc["assets"].values():
        a["href"] = str((items[4].parent / a["href"]).resolve())
    dup.write_text(json.dumps(doc))
    col = items[4].parent.parent / "collection.json"
    c = json.loads(col.read_text())
    c["links"].append({"rel": "item", "href": "./copy/" + dup.name, "type": "application/json"})
    col.write_text(json.dumps(c))

    result = run(catalog_config(f, f["root"] / "run"))
    skipped = {s["id"]: s["reason"] for s in result.manifest["scenes_skipped"]}
    ids = [d["id"] for d in docs]
    assert "red: raster:bands data_type float32, want uint16" in skipped[ids[0]]
    assert "nir: file dtype float32, want uint16" in skipped[ids[1]]
    assert "green: raster:bands nodata NaN" in skipped[ids[2]]
    assert "missing assets ['swir16']" in skipped[ids[3]]
    assert skipped[ids[4]].startswith("duplicate item id")
    assert result.manifest["n_scenes_used"] == 32 and ids[4] in result.manifest["scenes_used"]
    assert result.manifest["counts"]["sites"] == 1  # the mine is still found from the other 32 scenes


def test_scenes_in_two_utm_zones_are_reprojected(tiny_catalog):
    """Items of a neighbouring tile in UTM 46N (the zone west of 96 E) mixed with 47N ones."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    f = tiny_catalog
    for i in range(0, 36, 3):
        p = _item_json(f, i)
        doc = json.loads(p.read_text())
        for a in doc["assets"].values():
            tif = p.parent / a["href"]
            with rasterio.open(tif) as src:
                data, prof = src.read(1), src.profile
                t, w, h = calculate_default_transform(
                    src.crs, "EPSG:32646", src.width, src.height, *src.bounds, resolution=src.res[0]
                )
                dst = np.zeros((h, w), data.dtype)
                reproject(
                    data,
                    dst,
                    src_transform=src.transform,
                    src_crs=src.crs,
                    dst_transform=t,
                    dst_crs="EPSG:32646",
                    resampling=Resampling.nearest,
                    src_nodata=0,
                    dst_nodata=0,
                )
            prof.update(crs="EPSG:32646", transform=t, width=w, height=h)
            with rasterio.open(tif, "w", **prof) as out:
                out.write(dst, 1)
        doc["properties"]["proj:code"] = "EPSG:32646"
        p.write_text(json.dumps(doc))
    mixed = run(catalog_config(f, f["root"] / "mixed"))
    assert mixed.manifest["n_scenes_used"] == 36 and mixed.manifest["scenes_skipped"] == []
    assert mixed.manifest["grid"]["crs"] == "EPSG:32647"
    assert mixed.manifest["counts"] == {"sites": 1, "ponds": 1, "clearings": 1}  # as with one zone


def test_a_year_without_a_clear_view_is_a_gap_not_zero_mining(tmp_path):
    """2022 entirely under cloud (SCL 9): its new counts are blank and `gap` is true; the mine cut in
    2022 is counted in 2023, the first year it could be seen."""
    bounds = (436000.0, 2841000.0, 437000.0, 2842000.0)
    scenes = []
    for year in (2021, 2022, 2023):
        for month in range(1, 13):
            refl = uniform(FOREST, (100, 100))
            if (year, month) >= (2022, 3):
                for b, v in LATERITE.items():
                    refl[b][30:60, 20:60] = v
            sc = {"datetime": datetime(year, month, 15), "refl": refl}
            if year == 2022:
                sc["scl"] = np.full((50, 50), 9, np.uint8)
            scenes.append(sc)
    dem = (1500 + 3.0 * np.mgrid[0:100, 0:100][1]).astype(np.float32)
    cat = write_catalog(tmp_path / "cat", scenes, bounds=bounds, dem=dem)
    aoi = write_aoi_file(tmp_path / "aoi.geojson", bounds)
    result = run(catalog_config({"aoi": aoi, "catalog": cat}, tmp_path / "run"))
    table = pd.read_csv(tmp_path / "run" / "yearly_summary.csv")
    row = table.set_index("year")
    assert list(row["gap"]) == [False, True, False]
    assert pd.isna(row.loc[2022, "sites_new"]) and pd.isna(row.loc[2022, "ponds_new"])
    assert pd.isna(row.loc[2022, "cleared_area_new_m2"]) and row.loc[2022, "valid_observations"] == 0
    assert row.loc[2023, "sites_new"] == 1 and list(row["sites_total"]) == [0, 0, 1]
    assert ",2022,,0,,0," in (tmp_path / "run" / "yearly_summary.csv").read_text()  # blank, not 0
    assert any("2022" in w and "gap" in w for w in result.manifest["warnings"])
    checked = run_checker("check_run.py", tmp_path / "run")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "gap" in (tmp_path / "run" / "report.html").read_text()


def test_a_huge_aoi_warns_with_the_data_volume(tiny_catalog, monkeypatch, caplog):
    monkeypatch.setattr(run_module, "HUGE_VOLUME_BYTES", 1e5)  # the tiny AOI reads ~0.9 MB a year
    result = run(catalog_config(tiny_catalog, tiny_catalog["root"] / "run", **{"period.end": "2021-12-31"}))
    w = [w for w in result.manifest["warnings"] if w.startswith("huge AOI")]
    assert w and "GB of pixels" in w[0] and "36" not in w[0] and "12 scenes" in w[0]
    assert any("huge AOI" in r.message for r in caplog.records)


def test_missing_catalog_dir_and_far_away_aoi(cli, tiny_catalog, tmp_path):
    far = write_aoi_file(tmp_path / "far.geojson", (536000.0, 2841000.0, 537000.0, 2842000.0))
    code, _, err = cli(*run_args(tiny_catalog, aoi=far))
    assert_one_line_error(code, err, "outside every scene")
    shutil.rmtree(tiny_catalog["root"] / "cat")
    code, _, err = cli(*run_args(tiny_catalog))
    assert_one_line_error(code, err, "does not exist")
