"""The run's layers as other GIS tools want them: GeoJSON, FlatGeobuf, GeoParquet, KML/KMZ for Google Earth
and Shapefile, read from a finished run dir (``python -m pipeline export``)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import geopandas as gpd
import pandas as pd

from pipeline import styles
from pipeline.errors import OutputError
from pipeline.export import period_years, read_layers, read_manifest, write_layer_styles
from pipeline.extras import require

FORMATS = {
    "gpkg": ".gpkg",
    "geojson": ".geojson",
    "fgb": ".fgb",
    "parquet": ".parquet",
    "kml": ".kml",
    "kmz": ".kmz",
    "shp": ".shp",
}


MULTI_LAYER = {"gpkg", "kml", "kmz"}  # formats that hold all layers in one file


# Shapefile (dBase) field names stop at 10 characters; GDAL would cut them to clashing stubs
# (cleared_ar, cleared_a1), so they are shortened here on purpose and listed in a *_fields.csv.
SHP_NAMES = {
    "clearing_id": "clear_id",
    "months_seen": "months_sn",
    "mean_slope_deg": "slope_deg",
    "green_share": "green_shr",
    "n_clearings": "n_clear",
    "pond_area_m2": "pond_m2",
    "cleared_area_m2": "cleared_m2",
    "footprint_m2": "foot_m2",
    "envelope_m2": "envel_m2",
    "n_clear_obs": "n_clear_ob",
    "water_share": "water_shr",
    "provisional": "provisnl",
    "review_note": "rev_note",
    "reviewed_on": "rev_on",
    "chip_before": "chip_bef",
}


COORD_DECIMALS = 8  # lon/lat decimals in GeoJSON and KML: ~1 mm, keeps a 100 m2 pond's area to 0.01%


def _out_paths(fmt: str, out: Path, stem: str, names: list[str]) -> dict[str, Path]:
    """Layer -> file. ``out`` is a file (its suffix is the format's) or a directory."""
    ext = FORMATS[fmt]
    if out.suffix.lower() == ext:
        if fmt not in MULTI_LAYER and len(names) > 1:
            raise OutputError(f"{fmt} holds one layer per file: pass a directory as --out, or one --layer")
        out.parent.mkdir(parents=True, exist_ok=True)
        return {n: out for n in names}
    out.mkdir(parents=True, exist_ok=True)
    if fmt in MULTI_LAYER:
        return {n: out / f"{stem}{ext}" for n in names}
    return {n: out / f"{stem}_{n}{ext}" for n in names}


def export_layers(run_dir: Path, fmt: str, out: Path | None = None, layers=None, year: int | None = None) -> list[Path]:
    """Write the run's layers in another format; returns the files written.

    GeoJSON and KML/KMZ are WGS84 lon/lat (RFC 7946 / KML 2.2 allow nothing else); the others keep the
    AOI's UTM zone, so areas stay in metres. ``year`` keeps features first seen in or before it.
    """
    run_dir = Path(run_dir)
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise OutputError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    if fmt == "parquet":
        require("pyarrow", "parquet", "--format parquet (GeoParquet)")
    manifest = read_manifest(run_dir)
    data = read_layers(run_dir, layers, year)
    stem = str(manifest.get("aoi", "run")) + (f"_{year}" if year is not None else "")
    paths = _out_paths(fmt, Path(out) if out else run_dir / "exports", stem, list(data))
    written: list[Path] = []
    for p in set(paths.values()):
        if p.exists():
            p.unlink()
    if fmt in ("kml", "kmz"):
        p = next(iter(paths.values()))
        write_kml(p, data, manifest, kmz=fmt == "kmz")
        return [p]
    for name, gdf in data.items():
        p = paths[name]
        if fmt == "gpkg":
            gdf.to_file(p, layer=name, driver="GPKG", engine="pyogrio")
        elif fmt == "geojson":
            gdf.to_crs(4326).to_file(
                p,
                driver="GeoJSON",
                engine="pyogrio",
                layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": str(COORD_DECIMALS), "WRITE_NAME": "NO"},
            )
        elif fmt == "fgb":
            gdf.to_file(p, driver="FlatGeobuf", engine="pyogrio", layer_options={"SPATIAL_INDEX": "YES"})
        elif fmt == "parquet":
            gdf.to_parquet(p, index=False, geometry_encoding="WKB", write_covering_bbox=True)
        elif fmt == "shp":
            short = gdf.rename(columns=SHP_NAMES)
            for c in short.columns:
                if short[c].dtype == bool:  # dBase has no boolean that every reader agrees on
                    short[c] = short[c].astype("int8")
            short.to_file(p, driver="ESRI Shapefile", engine="pyogrio", encoding="UTF-8")
            fields = p.with_name(p.stem + "_fields.csv")
            pd.DataFrame(
                {
                    "field": [SHP_NAMES.get(c, c) for c in gdf.columns if c != "geometry"],
                    "name_in_gpkg": [c for c in gdf.columns if c != "geometry"],
                }
            ).to_csv(fields, index=False)
            written.append(fields)
        if p not in written:
            written.append(p)
    if fmt == "gpkg":
        write_layer_styles(written[0], period_years(manifest), list(data))
    return written


def _kml_coords(ring) -> str:
    return " ".join(f"{x:.{COORD_DECIMALS}f},{y:.{COORD_DECIMALS}f}" for x, y in ring.coords)


def _kml_polygon(poly) -> str:
    inner = "".join(
        f"<innerBoundaryIs><LinearRing><coordinates>{_kml_coords(r)}</coordinates></LinearRing></innerBoundaryIs>"
        for r in poly.interiors
    )
    return (
        f"<Polygon><outerBoundaryIs><LinearRing><coordinates>{_kml_coords(poly.exterior)}</coordinates>"
        f"</LinearRing></outerBoundaryIs>{inner}</Polygon>"
    )


def _kml_geometry(geom) -> str:
    if geom.geom_type == "Polygon":
        return _kml_polygon(geom)
    return "<MultiGeometry>" + "".join(_kml_polygon(g) for g in geom.geoms) + "</MultiGeometry>"


def write_kml(path: Path, layers: dict[str, gpd.GeoDataFrame], manifest: dict, kmz: bool = False) -> None:
    """KML 2.2 for Google Earth: a folder per layer, a style per first year, and a TimeSpan on every
    placemark (from January of its first year; until December of its last year if it stopped before
    the period's end) so Google Earth's time slider plays the years."""

    years = period_years(manifest)
    final_year = years[-1]
    colours = styles.year_colours(years)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2"><Document>',
        f"<name>{escape(str(manifest.get('aoi', 'run')))}: rare-earth mining footprints</name>",
        f"<description>{escape(_provenance_line(manifest))}</description>",
    ]
    for name in layers:
        for y, c in colours.items():
            s = styles.symbol(name, c)
            parts.append(
                f'<Style id="{name}-{y}"><LineStyle><color>{styles.kml_colour(s["outline"], s["outline_opacity"])}'
                f"</color><width>{max(1.0, s['width_mm'] * 4):.1f}</width></LineStyle>"
                f"<PolyStyle><color>{styles.kml_colour(s['fill'], s['fill_opacity'])}</color>"
                f"<fill>{1 if s['fill_opacity'] > 0 else 0}</fill><outline>1</outline></PolyStyle></Style>"
            )
    for name, gdf in layers.items():
        id_col = {"sites": "site_id", "ponds": "pond_id", "clearings": "clearing_id"}[name]
        parts.append(f"<Folder><name>{escape(styles.LAYER_TITLES[name])}</name>")
        wgs = gdf.to_crs(4326)
        cols = [c for c in gdf.columns if c != "geometry"]
        for row, geom in zip(gdf[cols].itertuples(index=False), wgs.geometry):
            rec = row._asdict()
            first, last = int(rec["first_year"]), rec.get("last_year")
            end = (
                f"<end>{int(last)}-12-31</end>"
                if last is not None and not pd.isna(last) and int(last) < final_year
                else ""
            )
            data = "".join(f'<Data name="{k}"><value>{escape(_kml_value(v))}</value></Data>' for k, v in rec.items())
            parts.append(
                f"<Placemark><name>{name[:-1] if name != 'clearings' else 'clearing'} {rec[id_col]} "
                f"({first})</name><TimeSpan><begin>{first}-01-01</begin>{end}</TimeSpan>"
                f"<styleUrl>#{name}-{first}</styleUrl><ExtendedData>{data}</ExtendedData>"
                f"{_kml_geometry(geom)}</Placemark>"
            )
        parts.append("</Folder>")
    parts.append("</Document></kml>\n")
    text = "".join(parts)
    if kmz:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("doc.kml", text)
    else:
        path.write_text(text, encoding="utf-8")


def _kml_value(v) -> str:
    if isinstance(v, float):
        return "" if pd.isna(v) else f"{v:.6g}"
    return str(v)


def _provenance_line(manifest: dict) -> str:
    p = manifest.get("config", {}).get("period", {})
    return (
        f"Sentinel-2 change detection, period {p.get('start')} to {p.get('end')}, "
        f"{manifest.get('n_scenes_used', '?')} scenes, code {manifest.get('code_version', '?')}, "
        f"run {manifest.get('created', '?')}"
    )
