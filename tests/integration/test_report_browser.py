"""The report in a real browser: headless Chromium (Debian's `chromium`, which .ci/run installs) loads
report.html from disk with networking off, and the DOM it builds is checked: one SVG path per feature
on the map, the year slider hiding later features, one bar per year in each chart. A screenshot is kept
as a test artefact (outputs/test-artifacts/, or $TEST_ARTIFACTS)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import export, report
from tests.support import REPO

CHROMIUM = next(
    (
        p
        for p in (
            os.environ.get("CHROMIUM"),
            shutil.which("chromium"),
            shutil.which("chromium-browser"),
            shutil.which("google-chrome"),
        )
        if p
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: install Debian's `chromium` "
    "(.ci/run does: apt-get install -y chromium) or set CHROMIUM=/path/to/chrome",
)
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "outputs" / "test-artifacts"))


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # the flags keep Chromium from reaching for Google's services: the page must work with no network
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        f"--user-data-dir={profile}",
        "--window-size=1280,1900",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        *args,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def run_dir(simulated_run):
    return simulated_run[1].out


def _paths(dom: str, layer: str) -> list[str]:
    return re.findall(rf'<path[^>]*class="[^"]*\bkw-{layer}\b[^"]*"[^>]*>', dom)


def _visible(tag: str) -> bool:
    so = re.search(r'stroke-opacity="([\d.]+)"', tag)
    fo = re.search(r'fill-opacity="([\d.]+)"', tag)
    return (so and float(so.group(1)) > 0) or (fo and float(fo.group(1)) > 0 and 'fill="none"' not in tag)


def test_map_and_charts_render_in_chromium(run_dir, tmp_path):
    page = (run_dir / report.REPORT).resolve().as_uri()
    res = chromium(page, tmp_path / "profile", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert 'data-map-ready="1"' in dom, "the map script did not finish"
    layers = export.read_layers(run_dir)
    for name, gdf in layers.items():
        assert len(_paths(dom, name)) == len(gdf), name
        assert all(_visible(t) for t in _paths(dom, name)), name  # slider at the last year: all shown
    # Leaflet sized its vector layer to the map: the page laid out
    svg = re.search(
        r'<div class="leaflet-pane leaflet-overlay-pane"[^>]*><svg[^>]*width="(\d+)"[^>]*height="(\d+)"', dom
    )
    assert svg and int(svg.group(1)) > 300 and int(svg.group(2)) > 300
    assert "leaflet-control-layers" in dom and "leaflet-control-scale" in dom
    years = export.period_years(export.read_manifest(run_dir))
    for chart in ("sites", "footprint"):
        bars = re.findall(rf'<g id="{chart}-bar-(\d{{4}})">\s*<path', dom)
        assert [int(y) for y in bars] == years, chart

    shot = ARTIFACTS / "report_simulated.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    res = chromium(page, tmp_path / "profile2", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.stat().st_size > 20_000, res.stderr[-2000:]


def test_year_slider_hides_later_features(run_dir, tmp_path):
    layers = export.read_layers(run_dir)
    year = int(layers["sites"]["first_year"].min())
    page = (run_dir / report.REPORT).resolve().as_uri() + f"#year={year}"
    dom = chromium(page, tmp_path / "profile", "--dump-dom").stdout
    assert f'data-year="{year}"' in dom
    for name, gdf in layers.items():
        tags = _paths(dom, name)
        assert len(tags) == len(gdf)
        assert sum(map(bool, map(_visible, tags))) == (gdf["first_year"] <= year).sum(), name


def test_a_site_link_opens_its_popup_with_the_before_and_after_chips(run_dir, tmp_path):
    sites = export.read_layers(run_dir, ["sites"])["sites"]
    with_before = sites[sites["chip_before"] != ""]
    assert len(with_before), "no site has a composite before its first year"
    site = int(with_before["site_id"].iloc[0])
    page = (run_dir / report.REPORT).resolve().as_uri() + f"#site={site}"
    dom = chromium(page, tmp_path / "profile", "--dump-dom").stdout
    assert f'data-site="{site}"' in dom
    popup = re.search(r'<div class="leaflet-popup-content"[^>]*>(.*?)</table>', dom, re.S)
    assert popup, "no popup open"
    chips = re.findall(r'<img src="([^"]+)"', popup.group(1))
    assert chips == [f"evidence/site_{site}_before.png", f"evidence/site_{site}_after.png"]
    assert all((run_dir / c).is_file() for c in chips)
    # the section of changes since the last run heads the page, its ids linking into the map
    assert '<section id="changes">' in dom and dom.index('id="changes"') < dom.index('id="map"')
    assert re.search(r'<a href="#site=\d+">', dom)
