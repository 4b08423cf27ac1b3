#!/usr/bin/env python3
# Copied from /work/shared/tools/check_catalog.py (shared/tools/ beside the repository); tests use it when shared/ is absent.
"""Checks a local scene catalog against the input contract (DESIGN.md, contract 3).

    python ../shared/tools/check_catalog.py path/to/catalog.json

Prints one line per problem and exits 1 if there is any. Needs pystac and rasterio.
"""

import sys

import pystac
import rasterio

S2 = {
    "blue": 10,
    "green": 10,
    "red": 10,
    "rededge1": 20,
    "rededge2": 20,
    "rededge3": 20,
    "nir": 10,
    "nir08": 20,
    "swir16": 20,
    "swir22": 20,
    "scl": 20,
}


def main(path):
    problems, n, dem = [], 0, 0
    cat = pystac.Catalog.from_file(path)
    for item in cat.get_items(recursive=True):
        if item.collection_id == "cop-dem-glo-30":
            dem += 1
            if "data" not in item.assets:
                problems.append(f"{item.id}: DEM item without a 'data' asset")
            continue
        n += 1
        p = item.properties
        if item.datetime is None:
            problems.append(f"{item.id}: no datetime")
        if "eo:cloud_cover" not in p:
            problems.append(f"{item.id}: no eo:cloud_cover")
        if not ("proj:code" in p or "proj:epsg" in p):
            problems.append(f"{item.id}: no proj:code / proj:epsg")
        missing = [k for k in S2 if k not in item.assets]
        if missing:
            problems.append(f"{item.id}: missing assets {missing}")
        baseline = p.get("s2:processing_baseline")
        for key, gsd in S2.items():
            a = item.assets.get(key)
            if a is None:
                continue
            rb = (a.extra_fields.get("raster:bands") or [{}])[0]
            if key != "scl":
                if rb.get("scale") != 0.0001:
                    problems.append(f"{item.id}/{key}: raster:bands scale is {rb.get('scale')}, want 0.0001")
                want = -0.1 if baseline and baseline >= "04.00" else 0
                if baseline and rb.get("offset", 0) != want:
                    problems.append(f"{item.id}/{key}: offset {rb.get('offset')} disagrees with baseline {baseline}")
            if n <= 3:  # open the files of the first few items only
                href = a.get_absolute_href()
                try:
                    with rasterio.open(href) as src:
                        want_dtype = "uint8" if key == "scl" else "uint16"
                        if src.dtypes[0] != want_dtype:
                            problems.append(f"{item.id}/{key}: dtype {src.dtypes[0]}, want {want_dtype}")
                        if abs(src.res[0] - gsd) > 1e-6:
                            problems.append(f"{item.id}/{key}: resolution {src.res[0]} m, want {gsd} m")
                        if src.crs is None:
                            problems.append(f"{item.id}/{key}: no CRS")
                except Exception as e:  # noqa: BLE001
                    problems.append(f"{item.id}/{key}: cannot open {href} ({e})")
    if n == 0:
        problems.append("no Sentinel-2 items found")
    for p in problems[:50]:
        print(p)
    if len(problems) > 50:
        print(f"... and {len(problems) - 50} more")
    if not problems:
        print(f"ok: {path} meets contract 3 ({n} scenes, {dem} DEM items)")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
