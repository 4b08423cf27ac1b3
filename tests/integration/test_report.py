"""report.html: in every run dir, self-contained (nothing fetched to render it), with the map data,
charts, yearly table and provenance of that run; charts also as PNG."""

import json
import re

import pytest

from pipeline import export, report


@pytest.fixture(scope="module")
def run_dir(simulated_run):
    return simulated_run[1].out


@pytest.fixture(scope="module")
def page(run_dir):
    return (run_dir / report.REPORT).read_text(encoding="utf-8")


def _run_data(page: str) -> dict:
    m = re.search(r"const RUN = (\{.*?\});</script>", page, re.S)
    return json.loads(m.group(1))


def test_every_run_writes_report_and_pngs_into_its_manifest(run_dir):
    manifest = export.read_manifest(run_dir)
    for name in (report.REPORT, report.SITES_PNG, report.FOOTPRINT_PNG):
        assert name in manifest["outputs"], name
        assert (run_dir / name).stat().st_size > 1000
    for png in (report.SITES_PNG, report.FOOTPRINT_PNG):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_is_self_contained(page):
    # no external script, stylesheet, image or font: it renders offline
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=", page)
    assert not re.search(r"<img[^>]*\bsrc=\"?https?:", page)
    assert not re.search(r"url\(\s*['\"]?(https?:|images/)", page)
    assert "Leaflet 1.9.4" in page


def test_report_holds_the_runs_features_table_and_provenance(page, run_dir):
    data = _run_data(page)
    layers = export.read_layers(run_dir)
    for name, gdf in layers.items():
        fc = data["layers"][name]
        assert len(fc["features"]) == len(gdf)
        assert sorted(f["properties"]["first_year"] for f in fc["features"]) == sorted(gdf["first_year"])
        lon, lat = fc["features"][0]["geometry"]["coordinates"][0][0]
        assert 97 < lon < 99 and 24 < lat < 27  # WGS84, longitude first, for Leaflet
        assert f'data-{name}="{len(gdf)}"' in page  # the counts the page's tests and scripts read
    manifest = export.read_manifest(run_dir)
    years = export.period_years(manifest)
    assert data["years"] == years and set(data["colours"]) == {str(y) for y in years}
    for y in years:  # one bar per year in each chart
        assert f'id="sites-bar-{y}"' in page and f'id="footprint-bar-{y}"' in page
    assert page.count("<tr><td>") >= len(years)  # the yearly table
    assert str(manifest["n_scenes_used"]) in page and manifest["code_version"] in page
    assert all(s in page for s in manifest["scenes_used"][:3])


def test_refresh_report_updates_checksums(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / report.REPORT).write_text("stale")
    report.refresh_report(copy)
    manifest = export.read_manifest(copy)
    assert manifest["outputs"][report.REPORT]["sha256"] == export.sha256(copy / report.REPORT)
    assert "Leaflet" in (copy / report.REPORT).read_text()
    assert set(manifest["outputs"]) == set(export.read_manifest(run_dir)["outputs"])
