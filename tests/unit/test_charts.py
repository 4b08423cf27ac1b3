"""The report's charts: read from the yearly summary, gaps and provisional years marked."""

import math

import pytest

from pipeline import charts

HEADER = (
    "aoi,year,sites_new,sites_total,ponds_new,ponds_total,pond_area_m2,cleared_area_new_m2,footprint_total_m2,"
    "valid_observations,provisional,gap\n"
)
SUMMARY = (
    HEADER
    + """x,2021,3,3,4,4,1200.0,52000.0,53200.0,20,False,False
x,2022,,3,,4,1200.0,,53200.0,0,False,True
x,2023,2,5,1,5,1500.0,30000.0,83500.0,9,True,False
"""
)


@pytest.fixture
def summary(tmp_path):
    path = tmp_path / "yearly_summary.csv"
    path.write_text(SUMMARY)
    return path


def test_summary_columns_keep_gaps_and_provisional_years(summary):
    t = charts.read_summary(summary)
    assert t["year"] == [2021, 2022, 2023]
    assert t["provisional"] == [False, False, True]
    assert t["sites_total"] == [3.0, 3.0, 5.0]
    assert t["sites_new"][0] == 3.0 and math.isnan(t["sites_new"][1])  # a gap: unknown, not zero
    assert t["footprint_total_m2"][2] == 83500.0


def test_charts_mark_gap_and_provisional_years(summary, tmp_path):
    svgs = charts.draw(summary, "x", tmp_path)
    assert set(svgs) == {"sites", "footprint"}
    assert "(gap)" in svgs["sites"] and "(+2)" in svgs["sites"]
    assert "hatched: provisional" in svgs["footprint"]
    for key in ("sites", "footprint"):
        assert all(f'id="{key}-bar-{y}"' in svgs[key] for y in (2021, 2022, 2023))
    for png in (charts.SITES_PNG, charts.FOOTPRINT_PNG):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))
