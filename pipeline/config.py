"""The run configuration: typed, validated, with explicit precedence.

Precedence is command line > YAML file > defaults. Unknown keys are an error at every level, so a
typo in a threshold name cannot silently leave the default in force. Relative paths in a YAML file
are relative to that file, so a scheduled job can run from any working directory. Nothing here
does work on import.
"""
from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from pipeline.errors import ConfigError

SourceKind = Literal["local", "earth-search", "planetary-computer", "sentinelhub"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PeriodConfig(_Model):
    """The days whose scenes are read."""
    start: date = Field(description="first day, YYYY-MM-DD")
    end: date = Field(description="last day, YYYY-MM-DD")

    @model_validator(mode="after")
    def _ordered(self):
        if self.start > self.end:
            raise ValueError(f"period start {self.start} is after end {self.end}: swap them")
        return self


class SourceConfig(_Model):
    """Where the scenes come from."""
    kind: SourceKind = Field("local", description="scene source: a local STAC catalog, a public STAC API, "
                                                  "or Sentinel Hub")
    catalog: Path | None = Field(None, description="local STAC catalog.json (kind=local)")
    stac_url: str | None = Field(None, description="STAC API root (kind=earth-search / planetary-computer); "
                                                    "default: the public endpoint of that kind")
    collection: str = Field("sentinel-2-l2a", description="the Sentinel-2 L2A collection to search")
    dem_collection: str = Field("cop-dem-glo-30", description="DEM collection the slope rules read; empty: no DEM, "
                                                              "and the hillside rules are skipped")
    # Kept high because a tile can be 90% cloudy while the (much smaller) AOI is clear.
    max_cloud_cover: float = Field(90.0, ge=0, le=100, description=(
        "scenes whose tile-level cloud cover (%) is above this are not read: they add almost no clear "
        "pixels but cost a full read"))
    # Credentials never go here: SH_CLIENT_ID/SH_CLIENT_SECRET.
    sh_base_url: str | None = Field(None, description="kind=sentinelhub: service root; default the Copernicus Data "
                                                      "Space Ecosystem (or what the sentinelhub config profile sets)")
    sh_token_url: str | None = Field(None, description="kind=sentinelhub: OAuth token URL; default as sh_base_url")


class CacheConfig(_Model):
    """The scene cache of the online sources."""
    dir: Path | None = Field(None, description="where the clipped scenes are kept, one folder per AOI grid; "
                                               "default $XDG_CACHE_HOME/kachin-ree-watch (~/.cache/kachin-ree-watch)")
    offline: bool = Field(False, description="run from the cache alone, no search, no download (a field laptop, "
                                             "an outage)")
    # "size" catches partial, truncated and overwritten files in seconds, whatever the cache's size.
    verify: Literal["size", "checksum"] = Field("size", description=(
        "how a cached entry is trusted: its size and modification time as recorded when it was written (size), "
        "or its SHA-256 re-hashed (checksum, also catches bit rot)"))


class DownloadConfig(_Model):
    """How the online sources download."""
    timeout_s: float = Field(60.0, gt=0, description="per request")
    retries: int = Field(5, ge=0, description="after the first try, on 429/5xx/dropped connections")
    backoff_s: float = Field(2.0, ge=0, description="urllib3's backoff factor: a second retry waits twice this, "
                             "doubling after, plus up to this much jitter")
    max_backoff_s: float = Field(120.0, ge=0, description="longest wait between tries, also when a server's "
                                                          "Retry-After asks for more")
    # 4 keeps 2 cores busy writing GeoTIFFs without provoking the APIs.
    concurrency: int = Field(4, ge=1, le=32, description=(
        "parallel scene downloads; Earth Search and Planetary Computer throttle (429) above a few dozen "
        "requests per second"))

    @model_validator(mode="after")
    def _backoff_ordered(self):
        if self.backoff_s > self.max_backoff_s:
            raise ValueError(f"backoff_s ({self.backoff_s}) is above max_backoff_s ({self.max_backoff_s}): "
                             "lower backoff_s or raise max_backoff_s")
        return self


class ComputeConfig(_Model):
    """How the work is split and where it runs; no output depends on it."""
    # 2048 px keeps a 20 km AOI in one read per band and scene: blocks that cut a COG's internal tiles
    # decode those tiles twice, which costs more than parallelism across blocks gains on a 2-core
    # machine (months run in parallel).
    chunk_px: int = Field(2048, ge=64, le=8192, multiple_of=2, description=(
        "the one place chunk sizes come from: spatial block edge (px) of the count stage, one task per month "
        "and block; even, because the 20 m bands are read on the half-resolution grid"))
    workers: int | None = Field(None, ge=1, description="dask threads; default: all cores")
    scheduler: str | None = Field(None, description=(
        "a dask.distributed scheduler address (tcp://host:8786) to send the work to; default DASK_SCHEDULER_ADDRESS "
        "if set, else threads here. Workers need this package and the output directory's disk"))
    # A block's inputs are 20 bytes per cell (pixels x months): 16 million cells is ~300 MB.
    onset_chunk_cells: int = Field(16_000_000, ge=10_000, description=(
        "cells (pixels x months) per block of the onset stage, which needs each pixel's whole monthly record "
        "in one block; keeps memory flat whatever the period: a longer period gets smaller spatial blocks"))
    composite_dir: Path | None = Field(None, description=(
        "where each year's monthly composites are kept (Zarr), so a re-run reuses the years whose scenes and "
        "settings have not changed; default a scratch directory beside the output, removed after the run"))

    @property
    def store_chunk_px(self) -> int:
        """Spatial chunk edge of the persisted monthly composites: 512 px (or the count block, if that
        is smaller or not a multiple), so the onset stage reads each stored chunk once, not a whole
        count block for every small onset block (zarr reads whole chunks)."""
        edge = min(512, self.chunk_px)
        return edge if self.chunk_px % edge == 0 else self.chunk_px

    def onset_chunk_px(self, n_months: int) -> int:
        """Spatial block edge (px) of the onset stage for a period of ``n_months``: the store's chunk
        edge times or divided by a power of two, the largest whose block holds at most
        ``onset_chunk_cells`` cells (so blocks line up with stored chunks)."""
        edge = self.store_chunk_px
        while edge * 2 <= self.chunk_px and (2 * edge) ** 2 * n_months <= self.onset_chunk_cells:
            edge *= 2
        while edge > 32 and edge ** 2 * max(n_months, 1) > self.onset_chunk_cells:
            edge //= 2
        return edge


SclClass = Annotated[int, Field(ge=0, le=11)]  # the Sentinel-2 scene classification's classes
Month = Annotated[int, Field(ge=1, le=12)]


class MaskConfig(_Model):
    """Which views of a pixel are clear."""
    # Class 2 (dark area / topographic shadow) stays valid because ratio indices survive terrain shading
    # and steep north slopes would otherwise never be seen in winter.
    invalid_scl: list[SclClass] = Field([0, 1, 3, 8, 9, 10], description=(
        "SCL classes that are never a clear view of the ground: nodata, saturated, cloud shadow, cloud medium/high "
        "probability, thin cirrus"))
    # Persistence (change.*) removes what is left.
    cloud_buffer_px: int = Field(3, ge=0, le=50, description=(
        "SCL misses the thin edges of clouds and shadows; growing its cloud classes by this many 10 m pixels "
        "removes most of them"))
    # Off by default, so the masks stay SCL-only; measured against real masks in reports/realdata.md.
    hot_max: float | None = Field(None, ge=-1, le=1, description=(
        "optional haze screen on top of SCL: a view is not clear where the haze-optimised transform "
        "blue - 0.5 red - 0.08 exceeds this (Fmask: 0, on top-of-atmosphere reflectance); null: off"))
    blue_max: float | None = Field(None, gt=0, le=1, description=(
        "optional haze screen: a view is not clear where blue reflectance exceeds this; null: off"))


class PondRules(_Model):
    """What a leachate pond is."""
    # Most ponds are smaller than the 20 m SWIR pixel: one half pond, half bank reads -0.1 to -0.2; a cloud
    # edge that crosses the threshold once is removed by persistence. (Tuned on simulator seeds 0-4: recall
    # rises to -0.25, precision starts to fall at -0.3.)
    mndwi_min: float = Field(-0.2, ge=-1, le=1, description=(
        "a view is water above this MNDWI: leachate ponds read about +0.6, laterite, forest and stubble -0.4 "
        "to -0.5; low enough to keep pixels half pond, half bank"))
    ndvi_max: float = Field(0.25, ge=-1, le=1, description=(
        "and below this NDVI: rejects vegetated pixels (flooded paddies with rice, wet forest) that MNDWI "
        "alone lets in"))
    # Open water reads 0.02-0.06 in B08, a pixel 40% pond and 60% bank or forest about 0.19.
    nir_max: float = Field(0.2, gt=0, le=1, description=(
        "and below this B08 reflectance, which water absorbs: white roofs and plastic sheeting have positive "
        "MNDWI too but are as bright in B08 as in green (~0.5)"))
    min_area_m2: float = Field(100.0, gt=0, description="a pond is at least one 10 m pixel")
    max_area_m2: float = Field(20000.0, gt=0, description=(
        "pond terraces merge at 10 m, but a water body bigger than this is a river reach or a lake"))
    max_distance_to_clearing_m: float = Field(150.0, gt=0, description=(
        "leach ponds sit at the foot of the cleared hillside they drain, within this distance; natural water "
        "does not"))
    min_months_seen: int = Field(2, ge=1, description=(
        "water seen in one month only is a flooded paddy or a puddle: a pond is confirmed in a later month too"))
    # Tuning seeds 0-9: no water body of pond size but a leach pond was seen for more than 7 months; 7 leach
    # ponds seen for 25-60 months had no clearing within 150 m, and with them 6 more truth sites are found.
    alone_min_months: int = Field(24, ge=1, description=(
        "water held this long (two dry seasons) is dug, not natural, and anchors a site with no clearing near "
        "it: a paddy or a flood pool is dry every spring"))
    # Fish ponds, paddies, river pools and alluvial gold workings lie on the flat valley floor, which also
    # holds water through the dry season. (The clearing's hillside rule, for the same reason.)
    alone_min_slope_deg: float = Field(7.0, ge=0, le=90, description=(
        "and only when it lies on a hillside: the ground within setting_radius_m slopes at least this much"))
    setting_radius_m: float = Field(50.0, gt=0, description="radius of the ground around a pond whose slope is "
                                                            "its setting")
    # The mixed pixels of a 10-15 m river reach it (median 0.08 on one simulated river, where 0.2 found none of
    # it); forest and bare hillside stay near 0, a paddy flooded for a monsoon month mostly under it.
    network_min_water_share: float = Field(0.1, gt=0, le=1, description=(
        "rivers and streams are not ponds: a pixel that showed water in this share of all its clear views "
        "(or became a pond) is water of some kind"))
    network_gap_m: float = Field(20.0, ge=0, description=(
        "pieces of such water this close are joined: a river breaks where its mixed pixels fall short"))
    # The 2,497 mapped Pang War pools joined at gaps up to 100 m span at most 267 m.
    network_min_length_m: float = Field(500.0, gt=0, description=(
        "water joined over this extent runs through the valley; no cluster of leaching pools does"))
    chain_gap_m: float = Field(100.0, gt=0, description=(
        "lone water bodies (no clearing beside them) this close are one chain; a chain over network_min_length_m "
        "is a river's pieces, however broken, and anchors no site"))
    floodplain_m: float = Field(100.0, ge=0, description=(
        "water on flat ground within this distance of a river is its floodplain (side channels, bar pools, "
        "oxbows, gold workings' pits), not a hillside's leach pond"))

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_area_m2 >= self.max_area_m2:
            raise ValueError(f"min_area_m2 ({self.min_area_m2}) must be below max_area_m2 ({self.max_area_m2}): "
                             "lower min_area_m2 or raise max_area_m2")
        if self.min_months_seen > self.alone_min_months:
            raise ValueError(f"alone_min_months ({self.alone_min_months}) is below min_months_seen "
                             f"({self.min_months_seen}): a lone pond must be confirmed first; raise alone_min_months")
        # two pieces joined across a gap are at least that far apart: a gap as long as a river would make
        # any two ponds that far apart a river
        for gap in ("network_gap_m", "chain_gap_m"):
            if getattr(self, gap) >= self.network_min_length_m:
                raise ValueError(f"{gap} ({getattr(self, gap)}) must be below network_min_length_m "
                                 f"({self.network_min_length_m}): lower {gap} or raise network_min_length_m")
        return self


class ClearingRules(_Model):
    """What a leaching site's cleared hillside is."""
    ndvi_max: float = Field(0.3, ge=-1, le=1, description=(
        "a view is bare below this NDVI: bare laterite reads 0.1-0.2, young regrowth above 0.4"))
    bsi_min: float = Field(0.05, ge=-1, le=1, description=(
        "and above this BSI (bare soil index), positive where SWIR and red dominate NIR and blue: soil, "
        "not vegetation"))
    min_area_m2: float = Field(2000.0, gt=0, description=(
        "smaller bare patches are tracks, single trees felled, or noise (0.2 ha = 20 pixels)"))
    green_ndvi_min: float = Field(0.5, ge=-1, le=1, description=(
        "a view above this NDVI is green vegetation (rice, regrowth); leached laterite never is"))
    # Simulated and observed: a mine ~1.0, a paddy ~0.6.
    min_bare_share: float = Field(0.8, ge=0, le=1, description=(
        "while active, a mine's clearing is bare in almost every clear view; a paddy is flooded or green "
        "in between"))
    max_green_share: float = Field(0.1, ge=0, le=1, description=(
        "and it never greens, while paddies (rice) and swiddens (rice, regrowth) do in 15-30% of views"))
    # Tuned on simulator seeds 0-4: 6 months let landslides in, 12 loses young mines.
    alone_min_months: int = Field(9, ge=1, description=(
        "a clearing with no pond near it is a site only when bare through a dry season and the monsoon after: "
        "a swidden carries rice by then, a landslide scar's bare core rarely lasts that long"))
    # Tuning seeds 0-9: 8 dropped two lone mines at 7.6-7.9 degrees, and no other clearing that passes the
    # share rules lies between 1 and 8 degrees, so 7 keeps them with a margin.
    alone_min_slope_deg: float = Field(7.0, ge=0, le=90, description=(
        "and lies on a hillside, where in-situ leaching injects; flat bare land is a river bar, a threshing "
        "floor or a village (beside ponds, a flat clearing is a pond terrace and stays)"))
    alone_max_elongation: float = Field(2.5, ge=1, description=(
        "and is not a landslide scar: those are long strips down the slope (length/width 2-6), leaching "
        "clearings spread around their ponds (mostly under 2.5)"))
    # A landslide scar's bare core lasted at most 11 months on the tuning seeds (0-9), while two mines cut
    # along the contour (length/width 3.4 and 4.0, bare 28 and 60 months) were missed for their shape.
    strip_min_months: int = Field(24, ge=1, description=(
        "unless it has stayed bare this long: a landslide scar revegetates"))
    road_max_width_m: float = Field(30.0, gt=0, description=(
        "a road cut is a bare strip a few pixels wide however it winds: bare ground whose area over skeleton "
        "length is at most this, and that runs at least road_min_length_m, never anchors a site or confirms "
        "a pond; leaching clearings are 40 m wide and more"))
    road_min_length_m: float = Field(200.0, gt=0, description="see road_max_width_m")
    # A leached hillside reads 0.16-0.22 (mean BSI of its clear views while active) in about 19 of 20 mine
    # clearings. Tuning seeds 0-9: 11 of the 17 landslide scars and burnt swiddens that anchored sites on
    # their own read 0.09-0.15 (the other 6, 0.15-0.18); no mine site was lost even at 0.16.
    alone_min_bsi: float = Field(0.15, ge=-1, le=1, description=(
        "and reads as laterite (mean BSI while active), not a landslide scar's grey debris with shrub "
        "coming back"))
    # On the tuning seeds such a neighbour is > 50% cleared in 9 of 10 cases, a forest or field neighbour
    # almost never qualifies; a second pixel adds next to nothing.
    grow_px: int = Field(1, ge=0, le=5, description=(
        "a clearing's edge pixels are part forest and rarely read bare: each clearing is grown this many pixels "
        "into neighbours whose canopy went and stayed gone; 0: off"))
    # A swidden is green by the end of its first monsoon and a paddy greens every year, so neither is still
    # bare at the end after a start this recent.
    provisional_recent_months: int = Field(3, ge=0, description=(
        "a clearing too young for alone_min_months, still bare in the record's last this-many months and bare, "
        "not green, since its onset, anchors a provisional site (flagged, lower confidence); 0: off"))
    # Tuning seeds, record ending in April: without this, 5 burnt swiddens became provisional sites.
    swidden_start_months: list[Month] = Field([1, 2, 3, 4, 5], description=(
        "swidden fields are cut January-March and burnt March-April: a clearing that starts in these calendar "
        "months is provisional only once bare to provisional_bare_until_month of that year"))
    provisional_bare_until_month: int = Field(10, ge=1, le=12, description=(
        "calendar month by which the rice of a swidden has greened (October)"))

    @model_validator(mode="after")
    def _ordered(self):
        if self.ndvi_max > self.green_ndvi_min:
            raise ValueError(f"ndvi_max ({self.ndvi_max}) is above green_ndvi_min ({self.green_ndvi_min}): "
                             "a view would be bare and green at once; lower ndvi_max or raise green_ndvi_min")
        if self.strip_min_months < self.alone_min_months:
            raise ValueError(f"strip_min_months ({self.strip_min_months}) is below alone_min_months "
                             f"({self.alone_min_months}): a strip must stay bare longer; raise strip_min_months")
        if self.road_max_width_m >= self.road_min_length_m:
            raise ValueError(f"road_max_width_m ({self.road_max_width_m}) must be below road_min_length_m "
                             f"({self.road_min_length_m}): a road is longer than wide; lower road_max_width_m")
        return self


class ChangeConfig(_Model):
    """When a feature starts, and whether it stays."""
    persistence: float = Field(0.6, gt=0, le=1, description=(
        "a feature starts in the first month in which most clear views show it and after which, within the "
        "persistence window, at least this share of clear views still show it"))
    min_observations: int = Field(3, ge=1, description=(
        "clear views the window needs: too few cannot confirm anything (monsoon months)"))
    pond_window_months: int = Field(12, ge=1, description="ponds must persist for a year")
    clearing_window_months: int = Field(24, ge=1, description=(
        "bare ground for two: a swidden field is bare for a dry season and then carries rice and regrowth, "
        "while a leaching site stays bare"))
    # On the tuning seeds every late-dated site was cut in the last 6 weeks of a year.
    clearing_lead_months: int = Field(2, ge=0, description=(
        "felling takes weeks, so a clearing's pixel is dated from the month its canopy went when the bare onset "
        "follows within this many months; 0: off"))
    # Forest NDVI is steady (0.82-0.83 in the median of the tuning seeds' clearings before the cut); the month
    # of a December cut reads 0.50-0.69, while haze or a missed cloud edge rarely moves a month's mean by 0.1.
    clearing_ndvi_drop: float = Field(0.1, gt=0, le=2, description=(
        "and, within the same lead, from the first month whose mean NDVI fell this much below the pixel's year "
        "before: the canopy thins before it is gone"))


class SitesConfig(_Model):
    """How ponds and clearings make sites."""
    # 150 m gives 318 sites, 300 m gives 210.
    linkage_m: float = Field(200.0, gt=0, description=(
        "single-linkage distance: 200 m turns the 2,497 mapped Pang War pools into 283 sites, matching the "
        "~300 locations reported by Global Witness"))
    attach_m: float = Field(50.0, ge=0, description=(
        "a clearing that cannot anchor a site joins one only this close: a leaching site's clearing surrounds "
        "its ponds, a landslide or a field 150 m away is a neighbour"))

    @model_validator(mode="after")
    def _ordered(self):
        if self.attach_m > self.linkage_m:
            raise ValueError(f"attach_m ({self.attach_m}) is above linkage_m ({self.linkage_m}): a clearing that "
                             "cannot anchor a site must join one no farther than sites link; lower attach_m")
        return self


class RunConfig(_Model):
    """One run: an AOI, a period and every setting."""
    aoi: Path = Field(description="AOI GeoJSON polygon (lon/lat)")
    name: str | None = Field(None, description="the AOI's name in the outputs; default the GeoJSON's name property, else "
                                                      "its file name")
    period: PeriodConfig
    source: SourceConfig = SourceConfig()
    cache: CacheConfig = CacheConfig()
    download: DownloadConfig = DownloadConfig()
    out: Path = Field(Path("outputs/run"), description="run directory to write")
    resolution: float = Field(10.0, gt=0, description="analysis grid (m): 10 or 20, the Sentinel-2 grids")
    compute: ComputeConfig = ComputeConfig()
    mask: MaskConfig = MaskConfig()
    ponds: PondRules = PondRules()
    clearings: ClearingRules = ClearingRules()
    change: ChangeConfig = ChangeConfig()
    sites: SitesConfig = SitesConfig()
    # See reports/accuracy.md for how the two compare.
    classifier: Literal["rules", "model"] = Field("rules", description=(
        "what decides ponds and clearings among the onset logic's candidates: the rules above, or a model "
        "trained with `python -m pipeline train` (model_path); the object rules apply after either"))
    model_path: Path | None = Field(None, description="the trained model (classifier: model)")

    @model_validator(mode="after")
    def _model_given(self):
        if self.classifier == "model" and self.model_path is None:
            raise ValueError("classifier is 'model' but no model_path is set: train one with "
                             "`python -m pipeline train` and set model_path, or use classifier: rules")
        return self

    @field_validator("resolution")
    @classmethod
    def _s2_resolution(cls, v):
        if v not in (10.0, 20.0):
            raise ValueError("resolution must be 10 or 20 (m), the Sentinel-2 grids")
        return v


def settings() -> list[tuple[str, str, str, str]]:
    """Every setting as ``(dotted name, default, bounds, description)``, in the order of the models: what
    ``python -m pipeline settings`` prints and docs/methods.md shows."""
    rows = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation, f"{prefix}{name}.")
                continue
            default = "required" if field.is_required() else _shown(field.default)
            rows.append((prefix + name, default, _bounds(field.annotation, field.metadata), field.description or ""))

    walk(RunConfig, "")
    return rows


def _shown(value: Any) -> str:
    """A default as it is written in YAML."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


_SIGNS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _bounds(annotation: Any, metadata: list) -> str:
    parts = [f"{sign} {getattr(m, key):g}" for m in metadata for key, sign in _SIGNS.items() if hasattr(m, key)]
    parts += [f"multiple of {m.multiple_of}" for m in metadata if hasattr(m, "multiple_of")]
    if get_origin(annotation) is Literal:
        parts.append("one of " + ", ".join(map(str, get_args(annotation))))
    if get_origin(annotation) is list and get_origin(get_args(annotation)[0]) is Annotated:
        inner = [m for info in get_args(get_args(annotation)[0])[1:] if isinstance(info, FieldInfo) for m in info.metadata]
        parts.append("each " + _bounds(None, inner))
    return ", ".join(parts)


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: a date stays text until pydantic checks it, so an impossible
    day (2021-02-30) is a ConfigError naming the setting, not a ValueError from inside the YAML parser."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def yaml_value(text: str) -> Any:
    """One YAML value (a --set VALUE, or a whole file), dates kept as text."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _set_dotted(doc: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = doc
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def _resolve_paths(doc: dict, base: Path) -> None:
    for section, key in (("", "aoi"), ("", "out"), ("source", "catalog"), ("compute", "composite_dir"),
                         ("cache", "dir"), ("", "model_path")):
        node = doc.get(section, {}) if section else doc
        if isinstance(node, dict) and node.get(key) not in (None, ""):
            p = Path(os.path.expanduser(str(node[key])))
            node[key] = str(p if p.is_absolute() else (base / p).resolve())


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build the run config from an optional YAML file and dotted overrides (``{"period.start": ...}``).

    Overrides come from the command line; their relative paths are relative to the working directory.
    """
    doc: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: pass one of configs/*.yaml or omit --config")
        try:
            doc = yaml_value(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]}): fix its syntax") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"config file {path} is not UTF-8 YAML text ({type(e).__name__}): "
                              "save it as UTF-8 (or pass one of configs/*.yaml)") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"config file {path} must be a YAML mapping of settings")
        _resolve_paths(doc, path.parent.resolve())
    cli: dict[str, Any] = {}
    for k, v in (overrides or {}).items():
        if v is not None:
            _set_dotted(cli, k, v)
    _resolve_paths(cli, Path.cwd())
    merged = _deep_merge(doc, cli)
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_one_line(e, path)) from None


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _one_line(e: ValidationError, path) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "config"
    src = f"config {path}" if path else "options"
    if err["type"] == "extra_forbidden":
        return f"{src}: unknown setting '{where}': remove it or check its spelling (see configs/demo.yaml)"
    if err["type"] == "missing":
        return f"{src}: '{where}' is required: set it in the YAML file or on the command line"
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(e.errors()) - 1} more problems)" if len(e.errors()) > 1 else ""
    return f"{src}: '{where}': {msg}{more}{_fix(err, where, src)}"


def _fix(err: Any, where: str, src: str) -> str:
    """How to fix one validation error, unless its message says so already."""
    if err["type"] == "value_error":
        return ""  # our own validators name the fix
    kind = err["type"]
    how = f"set it in the YAML file or with --set {where}=VALUE" if src.startswith("config") else \
        f"correct it on the command line (its option, or --set {where}=VALUE)"
    if kind.startswith("date") or kind.startswith("datetime"):
        return f": write a real calendar day as YYYY-MM-DD; {how}"
    if kind.startswith(("int", "float", "bool", "greater", "less", "literal", "string", "list", "dict",
                        "model", "path", "too_", "finite")):
        return f": {how} (see configs/demo.yaml for the type of each setting)"
    return f": {how}"
