"""Bad input: one line naming the problem and the fix, a non-zero exit, no complete-looking run dir."""

import json
import sys

import pytest

from tests.support import assert_one_line_error, run_args


@pytest.mark.parametrize(
    "content,words",
    [
        (None, ["does not exist"]),
        ("not json at all", ["not valid JSON"]),
        ('{"a": 1}', ["not GeoJSON"]),
        ('{"type": "FeatureCollection", "features": []}', ["no features"]),
        ('{"type": "Point", "coordinates": [98.3, 25.7]}', ["not GeoJSON"]),
        (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, '
            '"geometry": {"type": "Point", "coordinates": [98.3, 25.7]}}]}',
            ["Point", "not a Polygon"],
        ),
        (
            '{"type": "Polygon", "coordinates": [[[436000, 2841000], [437000, 2841000], [437000, 2842000], '
            "[436000, 2841000]]]}",
            ["WGS84 degrees"],
        ),
        (
            '{"type": "Polygon", "coordinates": [[[25.70, 98.30], [25.70, 98.31], [25.71, 98.31], [25.70, 98.30]]]}',
            ["look swapped"],
        ),
        (
            '{"type": "Polygon", "coordinates": [[[98.30, 25.70], [98.31, 25.71], [98.31, 25.70], [98.30, 25.71], '
            "[98.30, 25.70]]]}",
            ["invalid polygon", "Self-intersection", "Fix"],
        ),
        (
            '{"type": "MultiPolygon", "coordinates": '
            "[[[[98.30, 25.70], [98.31, 25.70], [98.31, 25.71], [98.30, 25.70]]], "
            "[[[98.40, 25.70], [98.41, 25.70], [98.41, 25.71], [98.40, 25.70]]]]}",
            ["2 separate polygons"],
        ),
        (
            '{"type": "Polygon", "coordinates": [[[95.9, 25.70], [96.1, 25.70], [96.1, 25.71], [95.9, 25.70]]]}',
            ["spans UTM zones [46, 47]", "split it at 96 E"],
        ),
        (
            '{"type": "FeatureCollection", '
            '"crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32647"}}, '
            '"features": [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": '
            "[[[436000, 2841000], [437000, 2841000], [437000, 2842000], [436000, 2841000]]]}}]}",
            ["declares CRS", "EPSG:4326"],
        ),
    ],
)
def test_bad_aoi_files(cli, tiny_catalog, content, words):
    bad = tiny_catalog["root"] / "bad.geojson"
    if content is not None:
        bad.write_text(content)
    code, _, err = cli(*run_args(tiny_catalog, aoi=bad))
    assert_one_line_error(code, err, str(bad), *words)
    assert not (tiny_catalog["root"] / "run").exists()


def test_start_after_end(cli, tiny_catalog):
    code, _, err = cli(*run_args(tiny_catalog, start="2023-01-01", end="2021-01-01"))
    assert_one_line_error(code, err, "after end")


def test_no_scenes_in_the_period(cli, tiny_catalog):
    code, _, err = cli(*run_args(tiny_catalog, start="2015-01-01", end="2015-12-31"))
    assert_one_line_error(code, err, "no scene", "widen the period")
    assert code == 3


def test_unknown_config_key(cli, tiny_catalog, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("aoi: x.geojson\nperiod: {start: 2021-01-01, end: 2021-12-31}\nponds: {mndwi_mni: 0.1}\n")
    code, _, err = cli("run", "--config", cfg)
    assert_one_line_error(code, err, "unknown setting 'ponds.mndwi_mni'")


def test_missing_catalog(cli, tiny_catalog):
    code, _, err = cli(*run_args(tiny_catalog, catalog=tiny_catalog["root"] / "nope.json"))
    assert_one_line_error(code, err, "does not exist")


def test_output_dir_holding_something_else(cli, tiny_catalog):
    out = tiny_catalog["root"] / "run"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    code, _, err = cli(*run_args(tiny_catalog))
    assert_one_line_error(code, err, "not a run dir")
    assert (out / "thesis.docx").read_text() == "precious" and not (out / "run.json").exists()


def test_every_scene_unreadable(cli, tiny_catalog):
    for tif in (tiny_catalog["root"] / "cat").rglob("red.tif"):
        tif.write_bytes(b"II*\x00garbage")
    code, _, err = cli(*run_args(tiny_catalog))
    assert_one_line_error(code, err, "can be read", "red")
    assert not (tiny_catalog["root"] / "run").exists()


def test_a_truncated_scene_is_skipped_and_recorded(cli, tiny_catalog):
    tif = sorted((tiny_catalog["root"] / "cat").rglob("nir.tif"))[3]
    data = tif.read_bytes()
    tif.write_bytes(data[: len(data) // 3])
    code, _, err = cli(*run_args(tiny_catalog))
    assert code == 0, err
    manifest = json.loads((tiny_catalog["root"] / "run" / "run.json").read_text())
    assert manifest["n_scenes_used"] == 35
    assert [s["id"] for s in manifest["scenes_skipped"]] == [tif.parent.name]


def test_rerun_replaces_a_previous_run(cli, tiny_catalog):
    assert cli(*run_args(tiny_catalog))[0] == 0
    first = (tiny_catalog["root"] / "run" / "yearly_summary.csv").read_text()
    assert cli(*run_args(tiny_catalog))[0] == 0
    assert (tiny_catalog["root"] / "run" / "yearly_summary.csv").read_text() == first
    assert [p.name for p in tiny_catalog["root"].iterdir() if p.name.startswith(".run")] == []


def test_an_unknown_command_or_option_is_a_usage_error(cli):
    # click's usage message and exit code 2, not an "unexpected" error (typer raises its own copy of
    # click's exceptions)
    for args in (["bogus"], ["run", "--bogus-option", "1"]):
        code, out, err = cli(*args)
        assert code == 2 and "unexpected" not in err and ("No such command" in err or "No such option" in err), err


def test_the_command_line_entry_exits_with_the_command_s_code(tiny_catalog, tmp_path):
    # ``python -m pipeline``: after a success the output is all there and exit 0; a failure exits with its
    # code and one line
    import subprocess

    run = [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        "--aoi",
        str(tiny_catalog["aoi"]),
        "--source",
        "local",
        "--catalog",
        str(tiny_catalog["catalog"]),
        "--out",
        str(tmp_path / "run"),
    ]
    ok = subprocess.run(
        [*run, "--start", "2021-01-01", "--end", "2023-12-31"], capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("in a browser)"), ok.stderr
    assert "Traceback" not in ok.stderr and "leaked" not in ok.stderr and (tmp_path / "run" / "run.json").is_file()
    bad = subprocess.run(
        [*run, "--start", "2023-01-01", "--end", "2021-12-31"], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr, bad.stderr
