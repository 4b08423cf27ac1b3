"""The detection rules' settings: what a cloud, a pond, a clearing, a change and a site are, each threshold
with its bounds and the reason for its default (``docs/methods.md`` shows them all, generated)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SettingsModel(BaseModel):
    """Every settings model: an unknown key is an error, and so is an assignment out of bounds."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


SclClass = Annotated[int, Field(ge=0, le=11)]  # the Sentinel-2 scene classification's classes
Month = Annotated[int, Field(ge=1, le=12)]


class MaskConfig(SettingsModel):
    """Which views of a pixel are clear."""

    # Class 2 (dark area / topographic shadow) stays valid because ratio indices survive terrain shading
    # and steep north slopes would otherwise never be seen in winter.
    invalid_scl: list[SclClass] = Field(
        [0, 1, 3, 8, 9, 10],
        description=(
            "SCL classes that are never a clear view of the ground: nodata, saturated, cloud shadow, cloud medium/high "
            "probability, thin cirrus"
        ),
    )
    # Persistence (change.*) removes what is left.
    cloud_buffer_px: int = Field(
        3,
        ge=0,
        le=50,
        description=(
            "SCL misses the thin edges of clouds and shadows; growing its cloud classes by this many 10 m pixels "
            "removes most of them"
        ),
    )
    # Off by default, so the masks stay SCL-only; measured against real masks in reports/realdata.md.
    hot_max: float | None = Field(
        None,
        ge=-1,
        le=1,
        description=(
            "optional haze screen on top of SCL: a view is not clear where the haze-optimised transform "
            "blue - 0.5 red - 0.08 exceeds this (Fmask: 0, on top-of-atmosphere reflectance); null: off"
        ),
    )
    blue_max: float | None = Field(
        None,
        gt=0,
        le=1,
        description=("optional haze screen: a view is not clear where blue reflectance exceeds this; null: off"),
    )


class PondRules(SettingsModel):
    """What a leachate pond is."""

    # Most ponds are smaller than the 20 m SWIR pixel: one half pond, half bank reads -0.1 to -0.2; a cloud
    # edge that crosses the threshold once is removed by persistence. (Tuned on simulator seeds 0-4: recall
    # rises to -0.25, precision starts to fall at -0.3.)
    mndwi_min: float = Field(
        -0.2,
        ge=-1,
        le=1,
        description=(
            "a view is water above this MNDWI: leachate ponds read about +0.6, laterite, forest and stubble -0.4 "
            "to -0.5; low enough to keep pixels half pond, half bank"
        ),
    )
    ndvi_max: float = Field(
        0.25,
        ge=-1,
        le=1,
        description=(
            "and below this NDVI: rejects vegetated pixels (flooded paddies with rice, wet forest) that MNDWI "
            "alone lets in"
        ),
    )
    # Open water reads 0.02-0.06 in B08, a pixel 40% pond and 60% bank or forest about 0.19.
    nir_max: float = Field(
        0.2,
        gt=0,
        le=1,
        description=(
            "and below this B08 reflectance, which water absorbs: white roofs and plastic sheeting have positive "
            "MNDWI too but are as bright in B08 as in green (~0.5)"
        ),
    )
    min_area_m2: float = Field(100.0, gt=0, description="a pond is at least one 10 m pixel")
    max_area_m2: float = Field(
        20000.0,
        gt=0,
        description=("pond terraces merge at 10 m, but a water body bigger than this is a river reach or a lake"),
    )
    max_distance_to_clearing_m: float = Field(
        150.0,
        gt=0,
        description=(
            "leach ponds sit at the foot of the cleared hillside they drain, within this distance; natural water "
            "does not"
        ),
    )
    min_months_seen: int = Field(
        2,
        ge=1,
        description=(
            "water seen in one month only is a flooded paddy or a puddle: a pond is confirmed in a later month too"
        ),
    )
    # Tuning seeds 0-9: no water body of pond size but a leach pond was seen for more than 7 months; 7 leach
    # ponds seen for 25-60 months had no clearing within 150 m, and with them 6 more truth sites are found.
    alone_min_months: int = Field(
        24,
        ge=1,
        description=(
            "water held this long (two dry seasons) is dug, not natural, and anchors a site with no clearing near "
            "it: a paddy or a flood pool is dry every spring"
        ),
    )
    # Fish ponds, paddies, river pools and alluvial gold workings lie on the flat valley floor, which also
    # holds water through the dry season. (The clearing's hillside rule, for the same reason.)
    alone_min_slope_deg: float = Field(
        7.0,
        ge=0,
        le=90,
        description=(
            "and only when it lies on a hillside: the ground within setting_radius_m slopes at least this much"
        ),
    )
    setting_radius_m: float = Field(
        50.0, gt=0, description="radius of the ground around a pond whose slope is its setting"
    )
    # The mixed pixels of a 10-15 m river reach it (median 0.08 on one simulated river, where 0.2 found none of
    # it); forest and bare hillside stay near 0, a paddy flooded for a monsoon month mostly under it.
    network_min_water_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description=(
            "rivers and streams are not ponds: a pixel that showed water in this share of all its clear views "
            "(or became a pond) is water of some kind"
        ),
    )
    network_gap_m: float = Field(
        20.0,
        ge=0,
        description=("pieces of such water this close are joined: a river breaks where its mixed pixels fall short"),
    )
    # The 2,497 mapped Pang War pools joined at gaps up to 100 m span at most 267 m.
    network_min_length_m: float = Field(
        500.0,
        gt=0,
        description=("water joined over this extent runs through the valley; no cluster of leaching pools does"),
    )
    chain_gap_m: float = Field(
        100.0,
        gt=0,
        description=(
            "lone water bodies (no clearing beside them) this close are one chain; a chain over network_min_length_m "
            "is a river's pieces, however broken, and anchors no site"
        ),
    )
    floodplain_m: float = Field(
        100.0,
        ge=0,
        description=(
            "water on flat ground within this distance of a river is its floodplain (side channels, bar pools, "
            "oxbows, gold workings' pits), not a hillside's leach pond"
        ),
    )

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_area_m2 >= self.max_area_m2:
            raise ValueError(
                f"min_area_m2 ({self.min_area_m2}) must be below max_area_m2 ({self.max_area_m2}): "
                "lower min_area_m2 or raise max_area_m2"
            )
        if self.min_months_seen > self.alone_min_months:
            raise ValueError(
                f"alone_min_months ({self.alone_min_months}) is below min_months_seen "
                f"({self.min_months_seen}): a lone pond must be confirmed first; raise alone_min_months"
            )
        # two pieces joined across a gap are at least that far apart: a gap as long as a river would make
        # any two ponds that far apart a river
        for gap in ("network_gap_m", "chain_gap_m"):
            if getattr(self, gap) >= self.network_min_length_m:
                raise ValueError(
                    f"{gap} ({getattr(self, gap)}) must be below network_min_length_m "
                    f"({self.network_min_length_m}): lower {gap} or raise network_min_length_m"
                )
        return self


class ClearingRules(SettingsModel):
    """What a leaching site's cleared hillside is."""

    ndvi_max: float = Field(
        0.3,
        ge=-1,
        le=1,
        description=("a view is bare below this NDVI: bare laterite reads 0.1-0.2, young regrowth above 0.4"),
    )
    bsi_min: float = Field(
        0.05,
        ge=-1,
        le=1,
        description=(
            "and above this BSI (bare soil index), positive where SWIR and red dominate NIR and blue: soil, "
            "not vegetation"
        ),
    )
    min_area_m2: float = Field(
        2000.0,
        gt=0,
        description=("smaller bare patches are tracks, single trees felled, or noise (0.2 ha = 20 pixels)"),
    )
    green_ndvi_min: float = Field(
        0.5,
        ge=-1,
        le=1,
        description=("a view above this NDVI is green vegetation (rice, regrowth); leached laterite never is"),
    )
    # Simulated and observed: a mine ~1.0, a paddy ~0.6.
    min_bare_share: float = Field(
        0.8,
        ge=0,
        le=1,
        description=(
            "while active, a mine's clearing is bare in almost every clear view; a paddy is flooded or green in between"
        ),
    )
    max_green_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description=("and it never greens, while paddies (rice) and swiddens (rice, regrowth) do in 15-30% of views"),
    )
    # Tuned on simulator seeds 0-4: 6 months let landslides in, 12 loses young mines.
    alone_min_months: int = Field(
        9,
        ge=1,
        description=(
            "a clearing with no pond near it is a site only when bare through a dry season and the monsoon after: "
            "a swidden carries rice by then, a landslide scar's bare core rarely lasts that long"
        ),
    )
    # Tuning seeds 0-9: 8 dropped two lone mines at 7.6-7.9 degrees, and no other clearing that passes the
    # share rules lies between 1 and 8 degrees, so 7 keeps them with a margin.
    alone_min_slope_deg: float = Field(
        7.0,
        ge=0,
        le=90,
        description=(
            "and lies on a hillside, where in-situ leaching injects; flat bare land is a river bar, a threshing "
            "floor or a village (beside ponds, a flat clearing is a pond terrace and stays)"
        ),
    )
    alone_max_elongation: float = Field(
        2.5,
        ge=1,
        description=(
            "and is not a landslide scar: those are long strips down the slope (length/width 2-6), leaching "
            "clearings spread around their ponds (mostly under 2.5)"
        ),
    )
    # A landslide scar's bare core lasted at most 11 months on the tuning seeds (0-9), while two mines cut
    # along the contour (length/width 3.4 and 4.0, bare 28 and 60 months) were missed for their shape.
    strip_min_months: int = Field(
        24, ge=1, description=("unless it has stayed bare this long: a landslide scar revegetates")
    )
    road_max_width_m: float = Field(
        30.0,
        gt=0,
        description=(
            "a road cut is a bare strip a few pixels wide however it winds: bare ground whose area over skeleton "
            "length is at most this, and that runs at least road_min_length_m, never anchors a site or confirms "
            "a pond; leaching clearings are 40 m wide and more"
        ),
    )
    road_min_length_m: float = Field(200.0, gt=0, description="see road_max_width_m")
    # A leached hillside reads 0.16-0.22 (mean BSI of its clear views while active) in about 19 of 20 mine
    # clearings. Tuning seeds 0-9: 11 of the 17 landslide scars and burnt swiddens that anchored sites on
    # their own read 0.09-0.15 (the other 6, 0.15-0.18); no mine site was lost even at 0.16.
    alone_min_bsi: float = Field(
        0.15,
        ge=-1,
        le=1,
        description=(
            "and reads as laterite (mean BSI while active), not a landslide scar's grey debris with shrub coming back"
        ),
    )
    # On the tuning seeds such a neighbour is > 50% cleared in 9 of 10 cases, a forest or field neighbour
    # almost never qualifies; a second pixel adds next to nothing.
    grow_px: int = Field(
        1,
        ge=0,
        le=5,
        description=(
            "a clearing's edge pixels are part forest and rarely read bare: each clearing is grown this many pixels "
            "into neighbours whose canopy went and stayed gone; 0: off"
        ),
    )
    # A swidden is green by the end of its first monsoon and a paddy greens every year, so neither is still
    # bare at the end after a start this recent.
    provisional_recent_months: int = Field(
        3,
        ge=0,
        description=(
            "a clearing too young for alone_min_months, still bare in the record's last this-many months and bare, "
            "not green, since its onset, anchors a provisional site (flagged, lower confidence); 0: off"
        ),
    )
    # Tuning seeds, record ending in April: without this, 5 burnt swiddens became provisional sites.
    swidden_start_months: list[Month] = Field(
        [1, 2, 3, 4, 5],
        description=(
            "swidden fields are cut January-March and burnt March-April: a clearing that starts in these calendar "
            "months is provisional only once bare to provisional_bare_until_month of that year"
        ),
    )
    provisional_bare_until_month: int = Field(
        10, ge=1, le=12, description=("calendar month by which the rice of a swidden has greened (October)")
    )

    @model_validator(mode="after")
    def _ordered(self):
        if self.ndvi_max > self.green_ndvi_min:
            raise ValueError(
                f"ndvi_max ({self.ndvi_max}) is above green_ndvi_min ({self.green_ndvi_min}): "
                "a view would be bare and green at once; lower ndvi_max or raise green_ndvi_min"
            )
        if self.strip_min_months < self.alone_min_months:
            raise ValueError(
                f"strip_min_months ({self.strip_min_months}) is below alone_min_months "
                f"({self.alone_min_months}): a strip must stay bare longer; raise strip_min_months"
            )
        if self.road_max_width_m >= self.road_min_length_m:
            raise ValueError(
                f"road_max_width_m ({self.road_max_width_m}) must be below road_min_length_m "
                f"({self.road_min_length_m}): a road is longer than wide; lower road_max_width_m"
            )
        return self


class ChangeConfig(SettingsModel):
    """When a feature starts, and whether it stays."""

    persistence: float = Field(
        0.6,
        gt=0,
        le=1,
        description=(
            "a feature starts in the first month in which most clear views show it and after which, within the "
            "persistence window, at least this share of clear views still show it"
        ),
    )
    min_observations: int = Field(
        3, ge=1, description=("clear views the window needs: too few cannot confirm anything (monsoon months)")
    )
    pond_window_months: int = Field(12, ge=1, description="ponds must persist for a year")
    clearing_window_months: int = Field(
        24,
        ge=1,
        description=(
            "bare ground for two: a swidden field is bare for a dry season and then carries rice and regrowth, "
            "while a leaching site stays bare"
        ),
    )
    # On the tuning seeds every late-dated site was cut in the last 6 weeks of a year.
    clearing_lead_months: int = Field(
        2,
        ge=0,
        description=(
            "felling takes weeks, so a clearing's pixel is dated from the month its canopy went when the bare onset "
            "follows within this many months; 0: off"
        ),
    )
    # Forest NDVI is steady (0.82-0.83 in the median of the tuning seeds' clearings before the cut); the month
    # of a December cut reads 0.50-0.69, while haze or a missed cloud edge rarely moves a month's mean by 0.1.
    clearing_ndvi_drop: float = Field(
        0.1,
        gt=0,
        le=2,
        description=(
            "and, within the same lead, from the first month whose mean NDVI fell this much below the pixel's year "
            "before: the canopy thins before it is gone"
        ),
    )


class SitesConfig(SettingsModel):
    """How ponds and clearings make sites."""

    # 150 m gives 318 sites, 300 m gives 210.
    linkage_m: float = Field(
        200.0,
        gt=0,
        description=(
            "single-linkage distance: 200 m turns the 2,497 mapped Pang War pools into 283 sites, matching the "
            "~300 locations reported by Global Witness"
        ),
    )
    attach_m: float = Field(
        50.0,
        ge=0,
        description=(
            "a clearing that cannot anchor a site joins one only this close: a leaching site's clearing surrounds "
            "its ponds, a landslide or a field 150 m away is a neighbour"
        ),
    )
    match_m: float = Field(
        10.0,
        ge=0,
        le=100,
        description=(
            "the site register: how far a feature may lie from where a previous run saw it and keep its id "
            "(misregistration, a pixel's edge)"
        ),
    )
    grown_pct: float = Field(
        10.0,
        ge=0,
        description="changes.csv: a site whose footprint grew by more than this (%) since the last run is 'grown'",
    )

    @model_validator(mode="after")
    def _ordered(self):
        if self.attach_m > self.linkage_m:
            raise ValueError(
                f"attach_m ({self.attach_m}) is above linkage_m ({self.linkage_m}): a clearing that "
                "cannot anchor a site must join one no farther than sites link; lower attach_m"
            )
        return self
