"""Images an analyst checks sites with: dry-season composites per year and before/after chips per site.

The count stage keeps, in each yearly store (``store.EVIDENCE_LAYERS``), the mean reflectance of the clear
views of the year's dry-season months (``outputs.evidence_months``), from the reads it makes anyway. Here
that composite is drawn in true colour (red, green, blue) and false colour (SWIR 1.6 um, NIR, red: bare
laterite shows orange, water black, forest green), with one fixed stretch for every year so that years
compare. Written as COGs with overviews for a QGIS basemap, and cut into chips around each site: the year
before its first year, and the latest year.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from PIL import Image
from rasterio.features import rasterize

from pipeline.store import EVIDENCE_BANDS, EVIDENCE_LAYERS, REFL_CODES, open_layers

DIR = "evidence"  # in the run dir
# band order of each picture, and the reflectance shown as white: a fixed stretch, the same every year
PICTURES = {
    "truecolour": (("red", "green", "blue"), 0.22),
    "falsecolour": (("swir16", "nir", "red"), 0.45),
}
GAMMA = 1 / 1.6  # lifts the dark forest of a hillside out of black
CHIP_SCALE = 2  # a 10 m pixel drawn 2 x 2: room for a thin outline; the report enlarges chips, pixelated
OUTLINE = (255, 40, 200)  # magenta: seen against laterite, forest and water alike


@dataclass
class YearPictures:
    """A year's dry-season composite drawn as pictures: name -> uint8 [3, y, x], 0 where no clear view."""

    year: int
    images: dict[str, np.ndarray]


def dry_season_codes(store_path: Path) -> np.ndarray:
    """A year's dry-season composite as its store keeps it: uint8 [5, y, x] (``EVIDENCE_BANDS``), the
    mean reflectance of the clear views as 1 + mean x ``REFL_CODES``, 0 where there was none."""
    layers = open_layers(store_path)
    return np.stack([np.asarray(layers[name][0]) for name in EVIDENCE_LAYERS])


def stretch(white: float) -> np.ndarray:
    """The picture value (uint8) of each stored code: reflectance 0..``white`` as 1..255 with ``GAMMA``,
    code 0 (no clear view) as 0, the nodata value."""
    reflectance = (np.arange(256, dtype=np.float32) - 1) / REFL_CODES
    table = (1 + np.rint(np.clip(reflectance / white, 0, 1) ** GAMMA * 254)).astype(np.uint8)
    table[0] = 0
    return table


def draw(codes: np.ndarray, bands: tuple[str, ...], white: float) -> np.ndarray:
    """A composite (``dry_season_codes``) as uint8 [3, y, x] of ``bands``, stretched by ``stretch``; 0
    wherever a band has no clear view."""
    table = stretch(white)
    out = np.stack([table[codes[EVIDENCE_BANDS.index(b)]] for b in bands])
    out[:, (out == 0).any(axis=0)] = 0
    return out


def year_pictures(stores, years: list[int]) -> list[YearPictures]:
    """Each year's pictures from its store (``stores``: path or None per year, as the count stage
    left them); a year without a store or a clear dry-season view has none."""
    out = []
    for (path, _), year in zip(stores, years):
        if path is None or not (Path(path) / EVIDENCE_LAYERS[0]).is_dir():
            continue
        codes = dry_season_codes(path)
        if not codes[0].any():
            continue
        out.append(YearPictures(year, {k: draw(codes, *v) for k, v in PICTURES.items()}))
    return out


def picture_path(name: str, year: int) -> str:
    return f"{DIR}/{name}_{year}.tif"


def write_year_pictures(out_dir: Path, grid, pictures: list[YearPictures], write_cog) -> list[Path]:
    """The composites as RGB COGs (``write_cog``: ``export.write_cog``), 0 = no data."""
    (out_dir / DIR).mkdir(exist_ok=True)
    written = []
    for p in pictures:
        for name, image in p.images.items():
            path = out_dir / picture_path(name, p.year)
            bands = PICTURES[name][0]
            write_cog(
                path,
                image,
                grid,
                nodata=0,
                descriptions=list(bands),
                resampling="AVERAGE",
                tags={
                    "meaning": f"dry-season {name} composite of {p.year}: mean of the clear views in the "
                    f"months configured (outputs.evidence_months); {bands} reflectance 0-{PICTURES[name][1]} "
                    f"as 1-255 (gamma {GAMMA:.3g}), 0 = no clear view"
                },
            )
            written.append(path)
    return written


def chip_window(geom, grid, margin_m: float) -> tuple[slice, slice]:
    """Rows and columns of ``grid`` around ``geom`` (grid CRS) with ``margin_m`` on every side."""
    x0, y0, x1, y1 = geom.bounds
    inv = ~grid.affine
    c0, r0 = inv * (x0 - margin_m, y1 + margin_m)
    c1, r1 = inv * (x1 + margin_m, y0 - margin_m)
    h, w = grid.shape.yx
    rows = slice(max(0, int(np.floor(r0))), min(h, int(np.ceil(r1))))
    cols = slice(max(0, int(np.floor(c0))), min(w, int(np.ceil(c1))))
    return rows, cols


def outline(geom, grid, window: tuple[slice, slice]) -> np.ndarray:
    """``geom``'s outline on the chip of ``window``: bool [h, w] at ``CHIP_SCALE`` pixels per grid pixel."""
    rows, cols = window
    shape = ((rows.stop - rows.start) * CHIP_SCALE, (cols.stop - cols.start) * CHIP_SCALE)
    transform = grid.affine * Affine.translation(cols.start, rows.start) * Affine.scale(1 / CHIP_SCALE)
    edge = shapely.boundary(geom).buffer(grid.affine.a / CHIP_SCALE)
    return rasterize([(edge, 1)], out_shape=shape, transform=transform, dtype=np.uint8) > 0


def chip(image: np.ndarray, window: tuple[slice, slice], edge: np.ndarray) -> np.ndarray:
    """The ``window`` of a picture, enlarged ``CHIP_SCALE`` times, with the ``edge`` (``outline``)
    drawn on it: uint8 [h, w, 3] for a PNG."""
    rows, cols = window
    part = image[:, rows, cols].repeat(CHIP_SCALE, axis=1).repeat(CHIP_SCALE, axis=2)
    rgb = np.moveaxis(part, 0, -1).copy()
    rgb[edge] = OUTLINE
    return rgb


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An RGB array (h, w, 3) as a PNG file (zlib's fastest level: chips are small and many)."""
    Image.fromarray(rgb, "RGB").save(path, optimize=False, compress_level=1)


def chip_paths(site_id: int) -> tuple[str, str]:
    return f"{DIR}/site_{site_id}_before.png", f"{DIR}/site_{site_id}_after.png"


def chip_years(sites, years) -> dict[int, tuple]:
    """The years of each site's before and after chips: the latest composite year before its first
    year (None without one) and the latest composite year. Empty without composites."""
    if not years:
        return {}
    latest = max(years)
    before = lambda first: max((y for y in years if y < first), default=None)  # noqa: E731
    return {int(s): (before(int(f)), latest) for s, f in zip(sites["site_id"], sites["first_year"])}


def chip_links(sites, years) -> dict[int, tuple]:
    """``site_id -> (before, after)``: the chips' paths relative to the run dir, "" where
    ``chip_years`` has no year."""
    return {
        sid: tuple("" if y is None else p for p, y in zip(chip_paths(sid), pair))
        for sid, pair in chip_years(sites, years).items()
    }


def write_site_chips(out_dir: Path, sites, grid, pictures: list[YearPictures], margin_m: float) -> list[Path]:
    """Before and after chips of each site (true colour, ``chip_years``), with its outline, at the
    paths of ``chip_links``; returns the files written."""
    by_year = {p.year: p.images["truecolour"] for p in pictures}
    years = chip_years(sites, list(by_year))
    if years:
        (out_dir / DIR).mkdir(exist_ok=True)
    written = []
    for geom, sid in zip(sites.geometry.values, sites["site_id"]):
        window = chip_window(geom, grid, margin_m)
        edge = outline(geom, grid, window)
        for name, year in zip(chip_paths(int(sid)), years.get(int(sid), ())):
            if year is not None:
                write_png(out_dir / name, chip(by_year[year], window, edge))
                written.append(out_dir / name)
    return written
