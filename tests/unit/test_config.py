"""The settings: bounds and the order the rules assume, each a one-line ConfigError naming the fix.
(Errors on the command line and in YAML files: tests/e2e/test_bad_inputs.py.)"""

import pytest

from pipeline.config import RunConfig, load_config, settings
from pipeline.errors import ConfigError
from tests.support import REPO

BASE = {"aoi": "a.geojson", "period.start": "2021-01-01", "period.end": "2021-12-31"}


def _error(**overrides) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(None, {**BASE, **overrides})
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize(
    "overrides,words",
    [
        (
            {"ponds.min_area_m2": 30000},
            ["'ponds'", "min_area_m2 (30000.0) must be below max_area_m2 (20000.0)", "raise max_area_m2"],
        ),
        ({"ponds.min_area_m2": 500, "ponds.max_area_m2": 500}, ["must be below max_area_m2"]),
        (
            {"ponds.min_months_seen": 30},
            ["alone_min_months (24) is below min_months_seen (30)", "raise alone_min_months"],
        ),
        ({"ponds.network_gap_m": 500}, ["network_gap_m (500.0) must be below network_min_length_m (500.0)"]),
        ({"ponds.network_min_length_m": 80}, ["chain_gap_m (100.0) must be below network_min_length_m (80.0)"]),
        (
            {"clearings.ndvi_max": 0.6},
            ["'clearings'", "ndvi_max (0.6) is above green_ndvi_min (0.5)", "bare and green", "lower ndvi_max"],
        ),
        ({"clearings.green_ndvi_min": 0.2}, ["ndvi_max (0.3) is above green_ndvi_min (0.2)"]),
        ({"clearings.strip_min_months": 6}, ["strip_min_months (6) is below alone_min_months (9)"]),
        ({"clearings.road_max_width_m": 200}, ["road_max_width_m (200.0) must be below road_min_length_m (200.0)"]),
        ({"sites.attach_m": 300}, ["'sites'", "attach_m (300.0) is above linkage_m (200.0)", "lower attach_m"]),
        ({"download.backoff_s": 200}, ["'download'", "backoff_s (200.0) is above max_backoff_s (120.0)"]),
    ],
)
def test_settings_out_of_the_order_the_rules_assume(overrides, words):
    message = _error(**overrides)
    for w in words:
        assert w in message, message


def test_the_order_checks_accept_equal_where_the_rules_do():
    # bare is NDVI < ndvi_max, green NDVI > green_ndvi_min: equal thresholds keep them apart
    cfg = load_config(
        None,
        {
            **BASE,
            "clearings.ndvi_max": 0.5,
            "ponds.min_months_seen": 24,
            "clearings.strip_min_months": 9,
            "sites.attach_m": 200,
        },
    )
    assert cfg.clearings.ndvi_max == cfg.clearings.green_ndvi_min


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("ponds.mndwi_min", 1.5, ["ponds.mndwi_min", "less than or equal to 1"]),
        ("ponds.ndvi_max", -2, ["ponds.ndvi_max", "greater than or equal to -1"]),
        ("clearings.bsi_min", float("nan"), ["clearings.bsi_min"]),
        ("clearings.alone_min_slope_deg", 91, ["clearings.alone_min_slope_deg", "less than or equal to 90"]),
        ("clearings.min_area_m2", 0, ["clearings.min_area_m2", "greater than 0"]),
        ("clearings.min_bare_share", 1.2, ["clearings.min_bare_share", "less than or equal to 1"]),
        ("clearings.swidden_start_months", [1, 13], ["clearings.swidden_start_months.1", "less than or equal to 12"]),
        ("mask.invalid_scl", [3, 12], ["mask.invalid_scl.1", "less than or equal to 11"]),
        ("mask.hot_max", 2, ["mask.hot_max", "less than or equal to 1"]),
    ],
)
def test_settings_out_of_bounds(key, value, words):
    message = _error(**{key: value})
    for w in words:
        assert w in message, message
    assert "--set" in message  # says how to fix it


def test_every_setting_is_described():
    missing = []

    def walk(model, prefix):
        for name, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                walk(sub, f"{prefix}{name}.")
            elif not field.description:
                missing.append(prefix + name)

    walk(RunConfig, "")
    assert not missing


def _settings_markdown() -> str:
    from typer.testing import CliRunner

    from pipeline.cli import app

    res = CliRunner().invoke(app, ["settings", "--markdown"])
    assert res.exit_code == 0, res.output
    return res.output


def test_the_settings_table_shows_defaults_and_bounds():
    rows = {line.split(" | ")[0].strip("| `"): line for line in _settings_markdown().splitlines()}
    assert len(rows) - 2 == len(settings())  # a header and its rule, then one row a setting
    assert rows["ponds.mndwi_min"].startswith("| `ponds.mndwi_min` | `-0.2` | >= -1, <= 1 | ")
    assert "| `20000.0` | > 0 |" in rows["ponds.max_area_m2"]
    assert "| `[1, 2, 3, 4, 5]` | each >= 1, <= 12 |" in rows["clearings.swidden_start_months"]
    assert "| `null` | >= 1 |" in rows["compute.workers"]
    assert "| `required` |" in rows["period.start"]


def test_docs_methods_shows_the_settings_as_they_are():
    text = (REPO / "docs" / "methods.md").read_text(encoding="utf-8")
    documented = text.split("<!-- settings:start -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert documented == _settings_markdown(), (
        "docs/methods.md's Settings table is out of date: replace the lines between <!-- settings:start --> and "
        "<!-- settings:end --> with the output of `python -m pipeline settings --markdown`"
    )
