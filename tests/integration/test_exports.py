"""Every export format read back by GDAL (pyogrio): same features, same CRS meaning, valid geometries,
areas kept within 0.1%; the COG rasters; the QGIS styles in the GeoPackage and the SLD."""

import json
import sqlite3
import xml.etree.ElementTree as ET
import zipfile

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from pipeline import export, formats
from pipeline.aoi import area_m2

UTM = 32647
ID = {"sites": "site_id", "ponds": "pond_id", "clearings": "clearing_id"}
AREA = {"sites": "envelope_m2", "ponds": "area_m2", "clearings": "area_m2"}  # a site's polygon is its envelope


@pytest.fixture(scope="module")
def run_dir(simulated_run):
    _, cfg, _ = simulated_run
    return cfg.out


@pytest.fixture(scope="module")
def originals(run_dir):
    layers = export.read_layers(run_dir)
    assert all(len(g) for g in layers.values()), {k: len(g) for k, g in layers.items()}
    return layers


def _read_back(fmt, paths, layer):
    """The layer as another tool would read it: GDAL through pyogrio (GeoParquet through pyarrow,
    since the GDAL in pyogrio's wheels has no Parquet driver)."""
    if fmt in formats.MULTI_LAYER:
        path = paths[0]
        if fmt == "kmz":
            path = f"/vsizip/{path}/doc.kml"
        if fmt in ("kml", "kmz"):
            from pipeline.styles import LAYER_TITLES

            return gpd.read_file(path, layer=LAYER_TITLES[layer], engine="pyogrio")
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    path = next(p for p in paths if p.stem.endswith(f"_{layer}") and p.suffix == formats.FORMATS[fmt])
    if fmt == "parquet":
        return gpd.read_parquet(path)
    return gpd.read_file(path, engine="pyogrio")


@pytest.mark.parametrize("fmt", list(formats.FORMATS))
def test_export_reads_back_with_same_features_crs_and_areas(fmt, run_dir, originals, tmp_path):
    paths = formats.export_layers(run_dir, fmt, tmp_path / fmt)
    for layer, orig in originals.items():
        back = _read_back(fmt, paths, layer)
        assert len(back) == len(orig), (fmt, layer)
        if fmt in ("geojson", "kml", "kmz"):
            # RFC 7946 and KML: WGS84, longitude first (Kachin is ~98 E, 25-26 N)
            assert back.crs.to_epsg() == 4326
            x0, y0, x1, y1 = back.total_bounds
            assert 97 < x0 < x1 < 99 and 24 < y0 < y1 < 27, (fmt, back.total_bounds)
        else:
            assert back.crs.to_epsg() == UTM, (fmt, back.crs)
        assert back.geometry.is_valid.all() and not back.geometry.is_empty.any()
        area = np.asarray(area_m2(back.to_crs(UTM)))
        key = {"shp": formats.SHP_NAMES.get(ID[layer], ID[layer])}.get(fmt, ID[layer])
        ids = back[key].astype(int).to_numpy()
        expected = orig.set_index(ID[layer]).loc[ids, AREA[layer]].to_numpy()
        rel = np.abs(area - expected) / expected
        assert rel.max() < 1e-3, (fmt, layer, rel.max())
        assert (
            back["first_year"].astype(int).to_numpy() == orig.set_index(ID[layer]).loc[ids, "first_year"].to_numpy()
        ).all()


def test_geojson_is_rfc7946(run_dir, tmp_path):
    (p,) = formats.export_layers(run_dir, "geojson", tmp_path / "s.geojson", layers=["clearings"])
    doc = json.loads(p.read_text())
    assert "crs" not in doc  # RFC 7946 removed the member: WGS84 lon/lat is implied
    for f in doc["features"]:
        poly = shapely.geometry.shape(f["geometry"])
        polys = poly.geoms if poly.geom_type == "MultiPolygon" else [poly]
        for g in polys:  # right-hand rule: exterior counter-clockwise, holes clockwise
            assert g.exterior.is_ccw and not any(r.is_ccw for r in g.interiors)


def test_kml_time_spans_play_the_years(run_dir, originals, tmp_path):
    (p,) = formats.export_layers(run_dir, "kmz", tmp_path)
    with zipfile.ZipFile(p) as z:
        root = ET.fromstring(z.read("doc.kml"))
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    marks = root.findall(".//k:Placemark", ns)
    assert len(marks) == sum(len(g) for g in originals.values())
    begins = [int(m.find("k:TimeSpan/k:begin", ns).text[:4]) for m in marks]
    expected = [y for layer in originals.values() for y in layer["first_year"]]
    assert begins == expected
    # a feature that stopped before the period's end (a pond that dried) ends there; others stay open
    final = export.period_years(export.read_manifest(run_dir))[-1]
    for m, (_, row) in zip(marks, [r for g in originals.values() for r in g.iterrows()]):
        end = m.find("k:TimeSpan/k:end", ns)
        assert (end is not None) == (row["last_year"] < final)
    assert {s.get("id").split("-")[0] for s in root.findall(".//k:Style", ns)} == set(export.LAYERS)


def test_shapefile_names_prj_and_cpg(run_dir, originals, tmp_path):
    paths = formats.export_layers(run_dir, "shp", tmp_path)
    for layer in originals:
        shp = tmp_path / f"{export.read_manifest(run_dir)['aoi']}_{layer}.shp"
        assert shp.with_suffix(".prj").is_file() and shp.with_suffix(".cpg").read_text().strip() == "UTF-8"
        names = pyogrio.read_info(shp)["fields"]
        assert all(len(n) <= 10 for n in names) and len(set(names)) == len(names)
        assert shp.with_name(shp.stem + "_fields.csv") in paths


def test_year_filter_keeps_features_first_seen_by_then(run_dir, originals, tmp_path):
    y = int(min(originals["sites"]["first_year"]))
    (p,) = formats.export_layers(run_dir, "fgb", tmp_path / "x.fgb", layers=["sites"], year=y)
    back = gpd.read_file(p, engine="pyogrio")
    assert len(back) == (originals["sites"]["first_year"] <= y).sum() < len(originals["sites"])


def test_bad_format_layer_and_run_dir_are_one_line_errors(run_dir, tmp_path):
    from pipeline.errors import OutputError

    with pytest.raises(OutputError, match="choose from"):
        formats.export_layers(run_dir, "dxf", tmp_path)
    with pytest.raises(OutputError, match="choose from"):
        formats.export_layers(run_dir, "gpkg", tmp_path, layers=["roads"])
    with pytest.raises(OutputError, match="not a run directory"):
        formats.export_layers(tmp_path, "gpkg")
    with pytest.raises(OutputError, match="one layer per file"):
        formats.export_layers(run_dir, "geojson", tmp_path / "all.geojson")


def test_rasters_are_cogs_matching_the_features(run_dir, originals):
    manifest = export.read_manifest(run_dir)
    years = export.period_years(manifest)
    for name in (export.FIRST_YEAR_TIF, export.CLASS_TIF, export.VALID_TIF):
        with rasterio.open(run_dir / name) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert ds.overviews(1), name
            assert ds.crs.to_epsg() == UTM
            assert list(ds.transform)[:6] == pytest.approx(manifest["grid"]["transform"])
            assert list(ds.shape) == manifest["grid"]["shape"]
        assert name in manifest["outputs"]
    with rasterio.open(run_dir / export.CLASS_TIF) as ds:
        classes = ds.read(1)
    with rasterio.open(run_dir / export.FIRST_YEAR_TIF) as ds:
        first = ds.read(1)
    # 10 m pixels: the pond pixels are exactly the ponds' area, all classed pixels the disturbed area
    # (a pond dug into a clearing is classed as pond)
    assert (classes == 2).sum() * 100 == pytest.approx(originals["ponds"]["area_m2"].sum())
    both = shapely.union_all([*originals["ponds"].geometry, *originals["clearings"].geometry])
    assert (classes > 0).sum() * 100 == pytest.approx(both.area)
    assert ((first > 0) == (classes > 0)).all()
    assert set(np.unique(first[first > 0])) <= set(years)
    with rasterio.open(run_dir / export.VALID_TIF) as ds:
        assert ds.count == len(years) and ds.descriptions == tuple(str(y) for y in years)
        valid = ds.read()
    table = gpd.pd.read_csv(run_dir / export.SUMMARY)
    # the table's figure is the median over AOI pixels; the raster covers the whole grid
    for band, row in zip(valid, table.itertuples()):
        assert abs(np.median(band) - row.valid_observations) <= 2


def test_geopackage_carries_qgis_styles(run_dir):
    gpkg = run_dir / export.GPKG
    assert "layer_styles" in pyogrio.list_layers(gpkg)[:, 0]
    with sqlite3.connect(gpkg) as con:
        rows = con.execute(
            "SELECT f_table_name, f_geometry_column, styleQML, styleSLD, useAsDefault FROM layer_styles"
        ).fetchall()
        geom_cols = dict(con.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall())
    years = export.period_years(export.read_manifest(run_dir))
    assert sorted(r[0] for r in rows) == sorted(export.LAYERS)
    for table, geom_col, qml, sld, default in rows:
        assert geom_col == geom_cols[table] and default == 1
        root = ET.fromstring(qml)
        r = root.find("renderer-v2")
        assert r.get("type") == "categorizedSymbol" and r.get("attr") == "first_year"
        cats = r.findall("categories/category")
        assert [c.get("value") for c in cats] == [str(y) for y in years]
        assert [c.get("label") for c in cats] == [str(y) for y in years]  # the legend
        symbols = {s.get("name"): s for s in r.findall("symbols/symbol")}
        assert set(symbols) == {c.get("symbol") for c in cats}
        colours = {s.find("layer/Option/Option[@name='color']").get("value") for s in symbols.values()}
        outlines = {s.find("layer/Option/Option[@name='outline_color']").get("value") for s in symbols.values()}
        assert len(colours) == len(years) or len(outlines) == len(years)  # one colour per year
        assert len(ET.fromstring(sld).findall(".//{http://www.opengis.net/sld}Rule")) == len(years)


def test_sld_file_styles_every_layer(run_dir):
    root = ET.parse(run_dir / export.STYLES_SLD).getroot()
    sld = "{http://www.opengis.net/sld}"
    names = [n.find(f"{sld}Name").text for n in root.findall(f"{sld}NamedLayer")]
    assert names == list(export.LAYERS)
    years = export.period_years(export.read_manifest(run_dir))
    for rule in root.iter(f"{sld}Rule"):
        lit = rule.find(".//{http://www.opengis.net/ogc}Literal").text
        assert int(lit) in years


def test_footprints_written_unsynced_leave_gdal_as_they_found_it(tmp_path):
    # SQLite's flush at every commit is turned off for the run's own GeoPackage only (the run dir is
    # flushed whole before its swap): the option is put back, and the layers read back whole
    layers = {
        "ponds": gpd.GeoDataFrame(
            {"pond_id": [1, 2]}, geometry=[shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)], crs=32647
        )
    }
    assert pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS") is None
    export.write_footprints(tmp_path / "f.gpkg", layers)
    assert pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS") is None
    back = gpd.read_file(tmp_path / "f.gpkg", layer="ponds")
    assert back["pond_id"].tolist() == [1, 2] and back.geometry.equals(layers["ponds"].geometry)
