"""What made a run: the code's version and the versions of the packages that computed it."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pipeline

PACKAGES = [
    "numpy",
    "xarray",
    "dask",
    "rasterio",
    "odc-stac",
    "odc-geo",
    "pystac",
    "geopandas",
    "shapely",
    "pyogrio",
    "pyproj",
    "scipy",
    "pydantic",
]


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{pipeline.__version__}+{sha}" if sha else pipeline.__version__


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out
