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
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from pipeline.errors import ConfigError
from pipeline.rules import ChangeConfig, ClearingRules, MaskConfig, Month, PondRules, SettingsModel, SitesConfig

SourceKind = Literal["local", "earth-search", "planetary-computer", "sentinelhub"]


class PeriodConfig(SettingsModel):
    """The days whose scenes are read."""

    start: date = Field(description="first day, YYYY-MM-DD")
    end: date = Field(description="last day, YYYY-MM-DD")

    @model_validator(mode="after")
    def _ordered(self):
        if self.start > self.end:
            raise ValueError(f"period start {self.start} is after end {self.end}: swap them")
        return self


class SourceConfig(SettingsModel):
    """Where the scenes come from."""

    kind: SourceKind = Field(
        "local", description="scene source: a local STAC catalog, a public STAC API, or Sentinel Hub"
    )
    catalog: Path | None = Field(None, description="local STAC catalog.json (kind=local)")
    stac_url: str | None = Field(
        None,
        description="STAC API root (kind=earth-search / planetary-computer); default: the public endpoint of that kind",
    )
    collection: str = Field("sentinel-2-l2a", description="the Sentinel-2 L2A collection to search")
    dem_collection: str = Field(
        "cop-dem-glo-30",
        description="DEM collection the slope rules read; empty: no DEM, and the hillside rules are skipped",
    )
    # Kept high because a tile can be 90% cloudy while the (much smaller) AOI is clear.
    max_cloud_cover: float = Field(
        90.0,
        ge=0,
        le=100,
        description=(
            "scenes whose tile-level cloud cover (%) is above this are not read: they add almost no clear "
            "pixels but cost a full read"
        ),
    )
    # Credentials never go here: SH_CLIENT_ID/SH_CLIENT_SECRET.
    sh_base_url: str | None = Field(
        None,
        description="kind=sentinelhub: service root; default the Copernicus Data "
        "Space Ecosystem (or what the sentinelhub config profile sets)",
    )
    sh_token_url: str | None = Field(None, description="kind=sentinelhub: OAuth token URL; default as sh_base_url")


class CacheConfig(SettingsModel):
    """The scene cache of the online sources."""

    dir: Path | None = Field(
        None,
        description="where the clipped scenes are kept, one folder per AOI grid; "
        "default $XDG_CACHE_HOME/kachin-ree-watch (~/.cache/kachin-ree-watch)",
    )
    offline: bool = Field(
        False, description="run from the cache alone, no search, no download (a field laptop, an outage)"
    )
    # "size" catches partial, truncated and overwritten files in seconds, whatever the cache's size.
    verify: Literal["size", "checksum"] = Field(
        "size",
        description=(
            "how a cached entry is trusted: its size and modification time as recorded when it was written (size), "
            "or its SHA-256 re-hashed (checksum, also catches bit rot)"
        ),
    )


class DownloadConfig(SettingsModel):
    """How the online sources download."""

    timeout_s: float = Field(60.0, gt=0, description="per request")
    retries: int = Field(5, ge=0, description="after the first try, on 429/5xx/dropped connections")
    backoff_s: float = Field(
        2.0,
        ge=0,
        description="urllib3's backoff factor: a second retry waits twice this, "
        "doubling after, plus up to this much jitter",
    )
    max_backoff_s: float = Field(
        120.0, ge=0, description="longest wait between tries, also when a server's Retry-After asks for more"
    )
    # 4 keeps 2 cores busy writing GeoTIFFs without provoking the APIs.
    concurrency: int = Field(
        4,
        ge=1,
        le=32,
        description=(
            "parallel scene downloads, each with its bands side by side; Earth Search and Planetary Computer "
            "throttle (429) above a few dozen requests per second"
        ),
    )

    @model_validator(mode="after")
    def _backoff_ordered(self):
        if self.backoff_s > self.max_backoff_s:
            raise ValueError(
                f"backoff_s ({self.backoff_s}) is above max_backoff_s ({self.max_backoff_s}): "
                "lower backoff_s or raise max_backoff_s"
            )
        return self


class ComputeConfig(SettingsModel):
    """How the work is split and where it runs; no output depends on it."""

    # 2048 px keeps a 20 km AOI in one read per band and scene: blocks that cut a COG's internal tiles
    # decode those tiles twice, which costs more than parallelism across blocks gains on a 2-core
    # machine (months run in parallel).
    chunk_px: int = Field(
        2048,
        ge=64,
        le=8192,
        multiple_of=2,
        description=(
            "the one place chunk sizes come from: spatial block edge (px) of the count stage, one task per month "
            "and block; even, because the 20 m bands are read on the half-resolution grid"
        ),
    )
    workers: int | None = Field(None, ge=1, description="dask threads; default: all cores")
    scheduler: str | None = Field(
        None,
        description=(
            "a dask.distributed scheduler address (tcp://host:8786) to send the work to; default "
            "DASK_SCHEDULER_ADDRESS if set, else threads here. Workers need this package and the output "
            "directory's disk"
        ),
    )
    # A block's inputs are 20 bytes per cell (pixels x months): 16 million cells is ~300 MB.
    onset_chunk_cells: int = Field(
        16_000_000,
        ge=10_000,
        description=(
            "cells (pixels x months) per block of the onset stage, which needs each pixel's whole monthly record "
            "in one block; keeps memory flat whatever the period: a longer period gets smaller spatial blocks"
        ),
    )
    composite_dir: Path | None = Field(
        None,
        description=(
            "where each year's monthly composites are kept (Zarr), so a re-run reuses the years whose scenes and "
            "settings have not changed; default a scratch directory beside the output, removed after the run"
        ),
    )

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
        while edge > 32 and edge**2 * max(n_months, 1) > self.onset_chunk_cells:
            edge //= 2
        return edge


class OutputsConfig(SettingsModel):
    """What a run writes besides the layers, the table and the report."""

    evidence: bool = Field(
        True,
        description=(
            "images to check sites by eye, made in the same pass that counts the scenes: dry-season true- and "
            "false-colour composites per year (COGs) and before/after chips per site (PNGs in the report's popups)"
        ),
    )
    evidence_months: list[Month] = Field(
        [1, 2, 3, 4, 11, 12],
        min_length=1,
        description="the months of a year's dry-season composite (Kachin's clear season: November to April)",
    )
    chip_margin_m: float = Field(
        150.0, ge=0, le=2000, description="ground shown around a site in its before/after chips"
    )


class RunConfig(SettingsModel):
    """One run: an AOI, a period and every setting."""

    aoi: Path = Field(description="AOI GeoJSON polygon (lon/lat)")
    name: str | None = Field(
        None, description="the AOI's name in the outputs; default the GeoJSON's name property, else its file name"
    )
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
    outputs: OutputsConfig = OutputsConfig()
    # See reports/accuracy.md for how the two compare.
    classifier: Literal["rules", "model"] = Field(
        "rules",
        description=(
            "what decides ponds and clearings among the onset logic's candidates: the rules above, or a model "
            "trained with `python -m pipeline train` (model_path); the object rules apply after either"
        ),
    )
    model_path: Path | None = Field(None, description="the trained model (classifier: model)")

    @model_validator(mode="after")
    def _model_given(self):
        if self.classifier == "model" and self.model_path is None:
            raise ValueError(
                "classifier is 'model' but no model_path is set: train one with "
                "`python -m pipeline train` and set model_path, or use classifier: rules"
            )
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
        inner = [
            m for info in get_args(get_args(annotation)[0])[1:] if isinstance(info, FieldInfo) for m in info.metadata
        ]
        parts.append("each " + _bounds(None, inner))
    return ", ".join(parts)


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: a date stays text until pydantic checks it, so an impossible
    day (2021-02-30) is a ConfigError naming the setting, not a ValueError from inside the YAML parser."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


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
    for section, key in (
        ("", "aoi"),
        ("", "out"),
        ("source", "catalog"),
        ("compute", "composite_dir"),
        ("cache", "dir"),
        ("", "model_path"),
    ):
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
            raise ConfigError(
                f"config file {path} is not valid YAML ({str(e).splitlines()[0]}): fix its syntax"
            ) from None
        except (UnicodeDecodeError, ValueError) as e:
            raise ConfigError(
                f"config file {path} is not UTF-8 YAML text ({type(e).__name__}): "
                "save it as UTF-8 (or pass one of configs/*.yaml)"
            ) from None
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
    how = (
        f"set it in the YAML file or with --set {where}=VALUE"
        if src.startswith("config")
        else f"correct it on the command line (its option, or --set {where}=VALUE)"
    )
    if kind.startswith("date") or kind.startswith("datetime"):
        return f": write a real calendar day as YYYY-MM-DD; {how}"
    if kind.startswith(
        (
            "int",
            "float",
            "bool",
            "greater",
            "less",
            "literal",
            "string",
            "list",
            "dict",
            "model",
            "path",
            "too_",
            "finite",
        )
    ):
        return f": {how} (see configs/demo.yaml for the type of each setting)"
    return f": {how}"
