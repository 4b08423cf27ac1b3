"""A run as STAC: the Item in the run dir and the AOI's Collection beside it validate against the STAC
JSON schemas (pystac's bundled copies: no network), and a STAC client reaches every output through them."""

from __future__ import annotations

import hashlib
import json

import pystac
from pystac.extensions.projection import ProjectionExtension
from pystac.validation import validate_dict

from pipeline import export, stac


def test_the_run_is_a_valid_stac_item_in_a_collection(simulated_run):
    _, cfg, result = simulated_run
    out = result.out
    item_doc = json.loads((out / stac.ITEM).read_text())
    collection_doc = json.loads(stac.collection_path(out).read_text())
    # the core schemas, offline; the extensions' fields are checked below through pystac's classes
    validate_dict(item_doc, extensions=[])
    validate_dict(collection_doc, extensions=[])

    collection = pystac.read_file(str(stac.collection_path(out)))
    (item,) = list(collection.get_items())
    manifest = export.read_manifest(out)
    assert item.common_metadata.start_datetime.date() == cfg.period.start
    assert item.common_metadata.end_datetime.date() == cfg.period.end
    assert ProjectionExtension.ext(item).code == manifest["grid"]["crs"]
    assert item.properties["processing:software"]["kachin-watch"] == manifest["code_version"]
    assert set(item.stac_extensions) == {stac.PROJECTION, stac.FILE, stac.PROCESSING}
    hrefs = {a.get_absolute_href() for a in item.assets.values()}
    assert {str((out / name).resolve()) for name in manifest["outputs"]} <= hrefs
    for asset in item.assets.values():
        path = asset.get_absolute_href()
        checksum = asset.extra_fields.get("file:checksum")
        if checksum:
            data = open(path, "rb").read()
            assert checksum == "1220" + hashlib.sha256(data).hexdigest()
            assert asset.extra_fields["file:size"] == len(data)
    gpkg = next(a for a in item.assets.values() if a.href.endswith(export.GPKG))
    assert gpkg.roles == ["data"] and gpkg.media_type == "application/geopackage+sqlite3"
    assert export.verify_run(out)["problems"] == []  # the Item is made from run.json, not listed in it
