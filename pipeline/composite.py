"""Composites of the per-observation classification: counts per month and per year.

Counting is what survives Kachin's weather: the monsoon (June-September) leaves months with no
clear view at all, so medians of reflectance over a calendar year are dominated by whichever
season happened to be clear. Counting, per pixel and month, how many clear views there were and
how many of them showed water or bare soil keeps every observation's evidence, dates change to
the month (a pond dug in November belongs to that year, not the next), and reduces the cube from
hundreds of scenes to one layer per month before anything is held in memory.
"""
from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import xarray as xr


COUNTS = ("valid", "pond", "bare", "green")  # the monthly count layers a run keeps


def month_starts(start: date, end: date) -> pd.DatetimeIndex:
    return pd.date_range(pd.Timestamp(start).to_period("M").to_timestamp(),
                         pd.Timestamp(end).to_period("M").to_timestamp(), freq="MS")


def monthly_counts(flags: dict[str, xr.DataArray], start: date, end: date) -> xr.Dataset:
    """Per-month counts (int16, dims month, y, x) of each boolean (time, y, x) flag.

    Every month of the period is present, with zeros where there was no scene.
    """
    months = month_starts(start, end)
    out = {}
    for name, flag in flags.items():
        # resample leaves NaN in a month without scenes (e.g. a monsoon month under the cloud limit):
        # fill before casting, since NaN has no integer value
        counts = flag.astype(np.int16).resample(time="MS").sum()
        counts = counts.reindex(time=months).fillna(0).astype(np.int16)
        out[name] = counts.rename(time="month")
    return xr.Dataset(out)


def yearly_counts(monthly: xr.DataArray) -> xr.DataArray:
    """Sum a (month, y, x) count over each calendar year: dims (year, y, x), int16 (at most a few
    hundred clear views a year even where orbits overlap)."""
    return monthly.groupby(monthly["month"].dt.year).sum("month", dtype=np.int16)


INDEX_SUMS = ("mndwi_sum", "ndvi_sum", "bsi_sum")  # monthly sums of each index over clear views


def monthly_sums(values: dict[str, xr.DataArray], valid: xr.DataArray, start: date, end: date) -> xr.Dataset:
    """Per-month float32 sums (dims month, y, x) of each (time, y, x) index over clear views only.

    With the ``valid`` count they give the mean index of any span of months, e.g. while a pond is
    active: the evidence a polygon carries, without keeping the scenes.
    """
    months = month_starts(start, end)
    out = {}
    for name, v in values.items():
        s = v.where(valid & v.notnull(), 0).astype(np.float32).resample(time="MS").sum()
        out[name] = s.reindex(time=months).fillna(0).astype(np.float32).rename(time="month")
    return xr.Dataset(out)
