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
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

SourceKind = Literal["local", "earth-search", "planetary-computer", "sentinelhub"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PeriodConfig(_Model):
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self):
        if self.start > self.end:
            raise ValueError(f"period start {self.start} is after end {self.end}: swap them")
        return self


class SourceConfig(_Model):
    kind: SourceKind = "local"
    catalog: Path | None = Field(None, description="local STAC catalog.json (kind=local)")
    stac_url: str | None = Field(None, description="STAC API root (kind=earth-search / planetary-computer); "
                                                    "default: the public endpoint of that kind")
    collection: str = "sentinel-2-l2a"
    dem_collection: str = "cop-dem-glo-30"
    # Scenes whose tile-level cloud cover is above this add almost no clear pixels but cost a full read.
    # Kept high because a tile can be 90% cloudy while the (much smaller) AOI is clear.
    max_cloud_cover: float = Field(90.0, ge=0, le=100)
    # kind=sentinelhub: service root and OAuth token URL; default the Copernicus Data Space Ecosystem
    # (or what the sentinelhub config profile sets). Credentials never go here: SH_CLIENT_ID/SH_CLIENT_SECRET.
    sh_base_url: str | None = None
    sh_token_url: str | None = None


class CacheConfig(_Model):
    # Where the clipped scenes of the online sources are kept, one folder per AOI grid. Default:
    # $XDG_CACHE_HOME/kachin-ree-watch (~/.cache/kachin-ree-watch).
    dir: Path | None = None
    # Run from the cache alone: no search, no download (a field laptop, an outage).
    offline: bool = False
    # "size": an entry is trusted when its size and modification time match what was recorded when
    # it was written (catches partial, truncated and overwritten files in seconds, whatever the
    # cache's size); "checksum": re-hash every entry against its recorded SHA-256 (also catches bit rot).
    verify: Literal["size", "checksum"] = "size"


class DownloadConfig(_Model):
    timeout_s: float = Field(60.0, gt=0, description="per request")
    retries: int = Field(5, ge=0, description="after the first try, on 429/5xx/dropped connections")
    backoff_s: float = Field(2.0, ge=0, description="urllib3's backoff factor: a second retry waits twice this, "
                             "doubling after, plus up to this much jitter")
    max_backoff_s: float = Field(120.0, ge=0)
    # Parallel scene downloads. Earth Search and Planetary Computer throttle (429) above a few dozen
    # requests per second; 4 keeps 2 cores busy writing GeoTIFFs without provoking them.
    concurrency: int = Field(4, ge=1, le=32)


class ComputeConfig(_Model):
    # The one place chunk sizes come from: spatial block edge in pixels of the count stage (one task
    # reads one month of scenes on one block). 2048 px keeps a 20 km AOI in one read per band and
    # scene: blocks that cut a COG's internal tiles decode those tiles twice, which costs more than
    # parallelism across blocks gains on a 2-core machine (months run in parallel). Even: 20 m bands
    # are read on the half-resolution grid.
    chunk_px: int = Field(2048, ge=64, le=8192, multiple_of=2)
    workers: int | None = Field(None, ge=1, description="dask threads; default: all cores")
    # A dask.distributed scheduler address (tcp://host:8786) to send the work to an existing cluster;
    # None: DASK_SCHEDULER_ADDRESS if set, else threads on this machine. Workers need this package
    # installed and the output directory's disk (the yearly composites are written there).
    scheduler: str | None = None
    # Onsets need each pixel's whole monthly record in one block; a block's inputs are 20 bytes per
    # cell (pixels x months). This many cells per block (~300 MB) keeps memory flat whatever the
    # period: a longer period gets smaller spatial blocks.
    onset_chunk_cells: int = Field(16_000_000, ge=10_000)
    # Where each year's monthly composites are kept (Zarr) so a re-run or a monthly run reuses the
    # years whose scenes and classification settings have not changed. None: a scratch directory
    # beside the output, removed after the run.
    composite_dir: Path | None = None


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


class MaskConfig(_Model):
    # SCL classes that are never a clear view of the ground: nodata, saturated, cloud shadow,
    # cloud medium/high probability, thin cirrus. Class 2 (dark area / topographic shadow) stays
    # valid because ratio indices survive terrain shading and steep north slopes would otherwise
    # never be seen in winter.
    invalid_scl: list[int] = [0, 1, 3, 8, 9, 10]
    # SCL misses the thin edges of clouds and shadows; growing the mask by this many 10 m pixels
    # removes most of them. Persistence (change.*) removes what is left.
    cloud_buffer_px: int = Field(3, ge=0, le=50)
    # An optional spectral haze/cloud screen on top of SCL (masking.haze_mask): a view is not clear
    # where the haze-optimised transform blue - 0.5 red - 0.08 exceeds ``hot_max`` (Fmask: 0, on
    # top-of-atmosphere reflectance) or blue exceeds ``blue_max``. None = off, the default: the
    # pipeline's masks stay SCL-only. Measured against real masks in reports/realdata.md.
    hot_max: float | None = None
    blue_max: float | None = Field(None, gt=0)


class PondRules(_Model):
    # Leachate ponds are open water (milky with clay or blue-lined): MNDWI (green vs SWIR 1.6 um) is
    # about +0.6 for them and -0.4 to -0.5 for laterite, forest and stubble. Most ponds are smaller
    # than the 20 m SWIR pixel, so their pixels are mixtures: one half pond, half bank reads -0.1 to
    # -0.2. -0.2 keeps those while staying well clear of dry land; a cloud edge that crosses it once
    # is removed by persistence. (Tuned on simulator seeds 0-4: recall rises to -0.25, precision
    # starts to fall at -0.3.)
    mndwi_min: float = -0.2
    # Rejects vegetated pixels (flooded paddies with rice, wet forest) that MNDWI alone can let in.
    ndvi_max: float = 0.25
    # Water absorbs near infrared: open water reads 0.02-0.06 in B08, a pixel 40% pond and 60% bank or
    # forest about 0.19. White roofs and plastic sheeting are as bright in B08 as in green (~0.5) and
    # their MNDWI is positive too: without this they read as water.
    nir_max: float = Field(0.2, gt=0, le=1)
    # A pond is at least one 10 m pixel ...
    min_area_m2: float = 100.0
    # ... and pond terraces merge at 10 m, but a water body bigger than this is a river reach or a lake.
    max_area_m2: float = 20000.0
    # Leach ponds sit at the foot of the cleared hillside they drain; natural water does not.
    max_distance_to_clearing_m: float = 150.0
    # Water seen in one month only is a flooded paddy or a puddle, even when the record ends too soon
    # after it to prove otherwise; a pond is confirmed in a later month too.
    min_months_seen: int = Field(2, ge=1)
    # Water held through two dry seasons is dug, not natural: a paddy or a flood pool is dry every
    # spring (the onset rule needs it in most clear views of a year), and the river is too big. Such a
    # pond anchors a site even with no clearing near it: some mines' clearings are too small to count,
    # or lie outside the AOI. (Tuning seeds 0-9: no water body of pond size but a leach pond was seen
    # for more than 7 months; 7 leach ponds seen for 25-60 months had no clearing within 150 m, and
    # with them 6 more truth sites are found.)
    alone_min_months: int = Field(24, ge=1)
    # ... and when it lies on a hillside: the ground around it (within setting_radius_m) slopes at least
    # this much. Fish ponds, paddies, river pools and alluvial gold workings lie on the flat valley floor,
    # which also holds water through the dry season. (The clearing's hillside rule, for the same reason.)
    alone_min_slope_deg: float = Field(7.0, ge=0, le=90)
    setting_radius_m: float = Field(50.0, gt=0)
    # Rivers and streams are not ponds. A pixel that showed water in this share of all its clear views
    # (or became a pond) is water of some kind: the mixed pixels of a 10-15 m river reach it (median
    # 0.08 on one such simulated river, where 0.2 found none of it), forest and bare hillside stay near
    # 0, a paddy flooded for a monsoon month mostly under it ...
    network_min_water_share: float = Field(0.1, gt=0, le=1)
    # ... pieces of such water this close are joined (a river breaks where its mixed pixels fall short) ...
    network_gap_m: float = Field(20.0, ge=0)
    # ... and water joined over this extent runs through the valley: no cluster of leaching pools does
    # (the 2,497 mapped Pang War pools joined at gaps up to 100 m span at most 267 m).
    network_min_length_m: float = Field(500.0, gt=0)
    # Lone water bodies (no clearing beside them) this close are one chain; a chain over
    # network_min_length_m is a river's pieces, however broken, and anchors no site.
    chain_gap_m: float = Field(100.0, gt=0)
    # Water on the flat ground within this distance of a river is its floodplain: side channels and bar
    # pools cut off from the main stream, oxbows, gold workings' pits; not a hillside's leach pond.
    floodplain_m: float = Field(100.0, ge=0)


class ClearingRules(_Model):
    # Bare laterite has NDVI around 0.1-0.2; young regrowth is above 0.4.
    ndvi_max: float = 0.3
    # BSI (bare soil index) is positive where SWIR+red dominate NIR+blue: soil, not vegetation.
    bsi_min: float = 0.05
    # Smaller bare patches are tracks, single trees felled, or noise: 0.2 ha = 20 pixels.
    min_area_m2: float = 2000.0
    # A view with NDVI above this is green vegetation (rice, regrowth); leached laterite never is.
    green_ndvi_min: float = 0.5
    # While active, a mine's clearing is bare in almost every clear view (simulated and
    # observed: ~1.0); a paddy is bare through the dry season but flooded or green in between (~0.6).
    min_bare_share: float = Field(0.8, ge=0, le=1)
    # ... and it never greens, while paddies (rice) and swiddens (rice, regrowth) do in 15-30% of views.
    max_green_share: float = Field(0.1, ge=0, le=1)
    # A clearing with no pond near it counts as a site only when it has stayed bare for a dry season
    # and the monsoon after it: a swidden carries rice by then, and the bare core of a landslide
    # scar rarely lasts that long (tuned on simulator seeds 0-4: 6 months let landslides in, 12
    # loses young mines) ...
    alone_min_months: int = Field(9, ge=1)
    # ... lies on a hillside, where in-situ leaching injects (flat bare land is a river bar, a
    # threshing floor or a village; with ponds beside it, a flat clearing is a pond terrace and stays;
    # tuning seeds 0-9: 8 dropped two lone mines at 7.6-7.9 degrees, and no other clearing that passes
    # the share rules lies between 1 and 8 degrees, so 7 keeps them with a margin) ...
    alone_min_slope_deg: float = 7.0
    # ... and is not a landslide scar: those are long strips down the slope (length/width 2-6), while
    # leaching clearings spread around their ponds (mostly under 2.5).
    alone_max_elongation: float = Field(2.5, ge=1)
    # ... unless it has stayed bare this long: a landslide scar revegetates, and its bare core lasted
    # at most 11 months on the tuning seeds (0-9), while two mines cut along the contour (length/width
    # 3.4 and 4.0, bare 28 and 60 months) were missed for their shape.
    strip_min_months: int = Field(24, ge=1)
    # A road cut is a bare strip a few pixels wide however it winds (hairpins make its rotated rectangle
    # square): bare ground whose area over skeleton length is at most this, and that runs at least
    # road_min_length_m, never anchors a site or confirms a pond. Leaching clearings spread around
    # their ponds and are 40 m wide and more.
    road_max_width_m: float = Field(30.0, gt=0)
    road_min_length_m: float = Field(200.0, gt=0)
    # ... and reads as laterite: a leached hillside is bare red soil (mean BSI of its clear views while
    # active 0.16-0.22 in about 19 of 20 mine clearings), a landslide scar grey debris with shrub
    # coming back. Tuning seeds 0-9: 11 of the 17 landslide scars and burnt swiddens that anchored sites
    # on their own read 0.09-0.15 (the other 6, 0.15-0.18); no mine site was lost even at 0.16.
    alone_min_bsi: float = 0.15
    # A clearing's edge pixels are part forest and rarely read as bare, so clearings came out 20%
    # small. Each is grown this many pixels into neighbours whose canopy went and stayed gone (not
    # green in >= change.persistence of clear views over change.clearing_window_months): on the tuning
    # seeds such a neighbour is > 50% cleared in 9 of 10 cases, a forest or field neighbour almost never
    # qualifies; a second pixel adds next to nothing. 0 turns growing off.
    grow_px: int = Field(1, ge=0, le=5)
    # A clearing cut in the last months of the record cannot have been bare for alone_min_months yet.
    # When it is still bare in the record's last this-many months and was bare, not green, since its
    # onset (the share rules above), it anchors a site as *provisional* (flagged, lower confidence),
    # where before it was dropped. A swidden is green by the end of its first monsoon and a paddy greens
    # every year, so neither is still bare at the end after a start this recent. 0 turns this off.
    provisional_recent_months: int = Field(3, ge=0)
    # Swidden fields are cut January-March and burnt March-April, then carry rice through the monsoon:
    # a clearing that starts in these calendar months is bare like one until the rice greens, so it is
    # provisional only once it has stayed bare to provisional_bare_until_month (October) of that year.
    # (Tuning seeds, record ending in April: without this, 5 burnt swiddens became provisional sites.)
    swidden_start_months: list[int] = [1, 2, 3, 4, 5]
    provisional_bare_until_month: int = Field(10, ge=1, le=12)


class ChangeConfig(_Model):
    # A feature starts in the first month in which most clear views show it and after which it
    # persists: within the persistence window, at least this fraction of clear views must show it.
    persistence: float = Field(0.6, gt=0, le=1)
    # Too few clear views cannot confirm anything (monsoon months).
    min_observations: int = Field(3, ge=1)
    # Ponds must persist for a year; bare ground for two, because a swidden field is bare for a dry
    # season and then carries rice and regrowth, while a leaching site stays bare.
    pond_window_months: int = Field(12, ge=1)
    clearing_window_months: int = Field(24, ge=1)
    # Felling and bulldozing take weeks: a hillside cut in December has lost its canopy (no longer
    # green) in December but reads bare only in January, so it was dated a year late. A clearing's
    # pixel is dated from the month its canopy went when the bare onset follows within this many
    # months (on the tuning seeds every late-dated site was cut in the last 6 weeks of a year). 0: off.
    clearing_lead_months: int = Field(2, ge=0)
    # ... and, within the same lead, from the first month whose mean NDVI (over its clear views) fell this
    # much below the pixel's year before: the canopy thins before it is gone. Forest NDVI is steady (0.82-0.83
    # in the median of the tuning seeds' clearings before the cut); the month of a December cut reads
    # 0.50-0.69, while haze or a missed cloud edge rarely moves a month's mean by 0.1.
    clearing_ndvi_drop: float = Field(0.1, gt=0)


class SitesConfig(_Model):
    # Single-linkage distance: 200 m turns the 2,497 mapped Pang War pools into 283 sites,
    # matching the ~300 locations reported by Global Witness (150 m gives 318, 300 m gives 210).
    linkage_m: float = Field(200.0, gt=0)
    # A clearing that cannot anchor a site (too young, too flat or landslide-shaped) joins one only
    # when it touches it: a leaching site's clearing surrounds its ponds, while a landslide or a field
    # 150 m away is a neighbour, not part of the mine.
    attach_m: float = Field(50.0, ge=0)


class RunConfig(_Model):
    aoi: Path
    name: str | None = None
    period: PeriodConfig
    source: SourceConfig = SourceConfig()
    cache: CacheConfig = CacheConfig()
    download: DownloadConfig = DownloadConfig()
    out: Path = Path("outputs/run")
    resolution: float = Field(10.0, gt=0)
    compute: ComputeConfig = ComputeConfig()
    mask: MaskConfig = MaskConfig()
    ponds: PondRules = PondRules()
    clearings: ClearingRules = ClearingRules()
    change: ChangeConfig = ChangeConfig()
    sites: SitesConfig = SitesConfig()
    # Which pixel classifier decides ponds and clearings among the candidates the onset logic finds:
    # the rules above (default: every threshold explained), or a model trained with
    # `python -m pipeline train` (file in model_path); the object rules (size, pond near a clearing,
    # sites) apply after either. See reports/accuracy.md for how the two compare.
    classifier: Literal["rules", "model"] = "rules"
    model_path: Path | None = None

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


def _fix(err: dict, where: str, src: str) -> str:
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
