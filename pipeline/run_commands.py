"""The commands on a finished run dir: export its layers, refresh its report, record a verdict in its
site register, check it against real labels, verify its checksums. ``cli`` registers them on its app."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline import console
from pipeline.errors import ConfigError


def export_cmd(
    run_dir: Path = typer.Option(..., "--run", help="a finished run directory"),
    fmt: str = typer.Option(
        "gpkg",
        "--format",
        "-f",
        help="gpkg | geojson (WGS84, RFC 7946) | fgb (FlatGeobuf) | kml | kmz (Google Earth, "
        "with time stamps) | parquet (GeoParquet) | shp (Shapefile)",
    ),
    year: Optional[int] = typer.Option(None, help="keep only features first seen in or before this year"),
    layer: list[str] = typer.Option([], "--layer", "-l", help="sites, ponds or clearings (repeatable; default all)"),
    out: Optional[Path] = typer.Option(
        None, help="file (with the format's extension) or directory; default RUN/exports/"
    ),
    to: str = typer.Option("files", "--to", help="files (see --format) or postgis (with --dsn)"),
    dsn: Optional[str] = typer.Option(
        None, "--dsn", help="with --to postgis: postgresql://user@host/db (password from PGPASSWORD or ~/.pgpass)"
    ),
    schema: str = typer.Option("kachin", "--schema", help="with --to postgis: the schema of the tables"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Write a run's sites, ponds and clearings for QGIS, ArcGIS, Google Earth or a web map, or upsert
    them and the yearly summary into a PostGIS database (one transaction; keyed by AOI and register id).

    GeoJSON and KML are in WGS84 lon/lat; the other formats keep the AOI's UTM zone (areas in m2).
    Single-layer formats (geojson, fgb, parquet, shp) write one file per layer.

    Examples:\n
      python -m pipeline export --run outputs/demo --format kmz                 # Google Earth, time slider\n
      python -m pipeline export --run outputs/demo --format geojson --layer sites --year 2022\n
      python -m pipeline export --run outputs/demo --format shp --out ~/arcgis/kachin/\n
      python -m pipeline export --run outputs/demo --to postgis --dsn postgresql://gis@db.example.org/mining
    """
    from pipeline.formats import export_layers

    console.setup_logging(False, quiet)
    if to == "postgis" or dsn is not None:
        from pipeline.postgis import export_run

        if to != "postgis" or not dsn:
            raise ConfigError("a PostGIS export needs both --to postgis and --dsn postgresql://user@host/db")
        for table, n in export_run(run_dir, dsn, schema).items():
            if not quiet:
                typer.echo(f"{schema}.{table}: {n} rows upserted")
        return
    if to != "files":
        raise ConfigError(f"--to {to!r}: write files or postgis")
    paths = export_layers(run_dir, fmt, out, layer or None, year)
    if not quiet:
        for p in paths:
            typer.echo(f"wrote {p}")


def report_cmd(
    run_dir: Path = typer.Option(..., "--run", help="a finished run directory"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """(Re)write a run's report.html and chart PNGs, e.g. after an update of the report code.

    Every run writes its report already; this refreshes it and the checksums in run.json.

    Example: python -m pipeline report --run outputs/demo
    """
    from pipeline.report import refresh_report

    console.setup_logging(False, quiet)
    for p in refresh_report(run_dir):
        if not quiet:
            typer.echo(f"wrote {p}")


def review_cmd(
    run_dir: Path = typer.Option(..., "--run", help="the run directory whose register (beside it) to edit"),
    site: Optional[int] = typer.Option(None, "--site", help="register site id"),
    status: Optional[str] = typer.Option(None, "--status", help="unreviewed, confirmed, rejected or uncertain"),
    note: Optional[str] = typer.Option(None, "--note", help="why, e.g. 'quarry on high-resolution imagery'"),
    reviewer: Optional[str] = typer.Option(None, "--reviewer", help="who (default: the login name)"),
    list_: bool = typer.Option(False, "--list", help="list the register's sites and their verdicts"),
):
    """Record an analyst's verdict on a site, kept in the AOI's site register through every later run.

    Rejected sites leave the yearly counts and stay listed. The next run writes the verdict into its
    layers; verdicts can also be edited in QGIS, in the sites layer of footprints.gpkg or of the register.

    Examples:\n
      python -m pipeline review --run outputs/chipwe_pangwa --site 14 --status rejected --note "quarry"\n
      python -m pipeline review --run outputs/chipwe_pangwa --list
    """
    import getpass
    from datetime import date

    from pipeline import register

    console.setup_logging(False, False)
    path = register.register_path(run_dir)
    if list_:
        sites = register.read_sites(path)
        cols = ["site_id", "status", "review", "review_note", "reviewer", "reviewed_on", "first_year", "n_ponds"]
        typer.echo(sites[cols].to_string(index=False))
        return
    if site is None or status is None:
        raise ConfigError("review needs --site and --status (or --list): e.g. --site 14 --status rejected")
    row = register.set_verdict(path, site, status.strip().lower(), note, reviewer or getpass.getuser(), date.today())
    typer.echo(f"site {site}: {row['review']}" + (f" ({row['review_note']})" if row["review_note"] else ""))


def reference_cmd(
    run_dir: Path = typer.Option(..., "--run", help="a finished run directory"),
    labels: Optional[Path] = typer.Option(
        None, "--labels", help="folder of label files with the names of pipeline/data's (default: the packaged ones)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Score a run against the real labels inside its AOI: Earth Genome's mapped pools, mine, non-mine and
    river points, and CNN detections of 2022 and 2024-25 (pipeline/data/README.md).

    Writes reference.md and reference.json into the run dir, adds the section "Check against real labels"
    to its report.html and lists both files in run.json (verify checks them). Only labels inside the AOI
    count; an AOI without any says so.

    Example: python -m pipeline reference --run outputs/demo
    """
    from pipeline.reference import check_run, summary_lines, write_reference
    from pipeline.report import refresh_report

    console.setup_logging(False, True)  # the summary below is this command's output; the log only warns
    result = check_run(run_dir, labels)
    refresh_report(run_dir, add=write_reference(run_dir, result))
    if not quiet:
        for line in summary_lines(result):
            typer.echo(line)


def verify_cmd(
    run_dir: Path = typer.Option(..., "--run", help="a finished run directory"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Check a run dir's files against the checksums in its run.json; exit 1 if any differs.

    Example: python -m pipeline verify --run outputs/chipwe_pangwa
    """
    from pipeline.errors import OutputError
    from pipeline.export import verify_run

    console.setup_logging(False, quiet)
    result = verify_run(run_dir)
    if result["problems"]:
        more = f" (and {len(result['problems']) - 1} more)" if len(result["problems"]) > 1 else ""
        raise OutputError(
            f"{run_dir} does not match its run.json: {result['problems'][0]}{more}: "
            "rerun the pipeline for this AOI (or restore the files from a backup)"
        )
    if not quiet:
        typer.echo(f"ok: {len(result['ok'])} outputs of {run_dir} match run.json")
