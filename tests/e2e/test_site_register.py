"""The analyst's loop on a simulated AOI: run, review, the next month's run, the changes; ids that last."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest

from pipeline import register
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.run import run, train_from_catalogs
from tests.support import edit_attributes


def settings(sim, out, end: str) -> dict:
    return {**sim.run_settings(out), "period.end": end, "compute.workers": 2}


def test_ids_and_verdicts_last_through_the_next_months_run(simulated_run, tmp_path, cli):
    sim, _, _ = simulated_run
    out = tmp_path / "aoi"
    first = run(load_config(None, settings(sim, out, "2023-10-31")))
    sites1 = gpd.read_file(out / "footprints.gpkg", layer="sites")
    assert len(sites1) >= 5 and first.manifest["changes"] == {"new": len(sites1)}
    assert sites1["site_id"].tolist() == list(range(1, len(sites1) + 1))

    # the analyst rejects one site with the command, and confirms another in QGIS (an edit of the layer)
    rejected, confirmed = int(sites1["site_id"].iloc[0]), int(sites1["site_id"].iloc[1])
    code, stdout, _ = cli(
        "review", "--run", str(out), "--site", str(rejected), "--status", "rejected", "--note", "quarry"
    )
    assert code == 0 and "rejected" in stdout
    edit_attributes(
        out / "footprints.gpkg", "UPDATE sites SET review = 'confirmed', reviewer = 'ana' WHERE site_id = ?", confirmed
    )

    second = run(load_config(None, settings(sim, out, "2023-11-30")))
    sites2 = gpd.read_file(out / "footprints.gpkg", layer="sites")
    # every site whose footprint did not change in the extra month kept its id: all of them
    unchanged = sites1.merge(sites2, on=["footprint_m2", "n_ponds", "first_year"], suffixes=("_1", "_2"))
    assert len(unchanged) >= len(sites1) - 1
    assert (unchanged["site_id_1"] == unchanged["site_id_2"]).all()
    ponds1 = gpd.read_file(out.parent / "aoi.register.gpkg", layer="ponds")
    assert set(ponds1["pond_id"]) >= set(gpd.read_file(out / "footprints.gpkg", layer="ponds")["pond_id"])

    verdicts = sites2.set_index("site_id")
    assert verdicts.loc[rejected, ["review", "review_note"]].tolist() == ["rejected", "quarry"]
    assert verdicts.loc[confirmed, ["review", "reviewer"]].tolist() == ["confirmed", "ana"]
    changes = pd.read_csv(out / "changes.csv")
    assert sorted(changes.loc[changes["change"] == "verdict", "site_id"]) == sorted([rejected, confirmed])
    assert second.manifest["changes"]["verdict"] == 2
    table = pd.read_csv(out / "yearly_summary.csv").iloc[-1]
    assert table["sites_rejected_total"] == 1 and table["sites_confirmed_total"] == 1
    assert table["sites_total"] == len(sites2) - 1 and table["sites_reviewed_total"] == 1
    page = (out / "report.html").read_text()
    assert 'id="changes"' in page and "verdict changed" in page
    geo = gpd.read_file(out / "changes.geojson")
    assert geo.crs.to_epsg() == 4326 and len(geo) == len(changes)

    # a register lost (or a run dir from before there was one): the ids of the run dir go on
    reg_path = register.register_path(out)
    reg_path.unlink()
    run(load_config(None, settings(sim, out, "2023-11-30")))
    sites3 = gpd.read_file(out / "footprints.gpkg", layer="sites")
    assert sites3["site_id"].tolist() == sites2["site_id"].tolist()
    assert pd.read_csv(out / "changes.csv").empty


def test_verdicts_train_the_pixel_classifier(simulated_run, tmp_path, cli):
    """The register's confirmed and rejected sites are the positives and negatives of `train`."""
    pytest.importorskip("sklearn")
    sim, _, _ = simulated_run
    out = tmp_path / "aoi"
    cfg = load_config(None, settings(sim, out, "2023-12-31"))
    run(cfg)
    reg_path = register.register_path(out)
    with pytest.raises(ConfigError, match="review some sites first"):
        train_from_catalogs([cfg], [reg_path], tmp_path / "m.joblib")
    sites = gpd.read_file(out / "footprints.gpkg", layer="sites")
    for sid, verdict in zip(sites["site_id"].iloc[:3], ["confirmed", "confirmed", "rejected"]):
        assert cli("review", "--run", str(out), "--site", str(sid), "--status", verdict)[0] == 0
    labels = register.verdict_labels(reg_path, sites.crs)
    assert set(labels["ponds"]["site_id"]) | set(labels["clearings"]["site_id"]) <= set(sites["site_id"].iloc[:2])
    bundle = train_from_catalogs([cfg], [reg_path], tmp_path / "m.joblib")
    # only pixels around the three reviewed sites were labelled, all three classes among them
    assert 0 < bundle["n_pixels"] < sites.iloc[:3].geometry.buffer(60).area.sum() / 100
    assert (tmp_path / "m.joblib").is_file()
