"""The default run (local catalog, threads, rule-based classes, GeoPackage and GeoTIFF outputs) works with
none of the optional extras installed."""

import subprocess
import sys

from tests.support import run_args, subprocess_env

# zarrs is not among them: installed, it registers zarr entry points that a blocked import breaks; its
# absence is zarr's own default pipeline
EXTRAS = ("distributed", "sklearn", "pyarrow")


def test_a_run_needs_no_extra(tiny_catalog):
    blocked = "".join(f"sys.modules[{m!r}] = None; " for m in EXTRAS)  # what an uninstalled package looks like
    code = (
        f"import runpy, sys; {blocked}"
        "sys.argv = ['pipeline', *sys.argv[1:]]; runpy.run_module('pipeline', run_name='__main__')"
    )
    args = [str(a) for a in run_args(tiny_catalog)]
    res = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=subprocess_env(), timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tiny_catalog["root"] / "run" / "run.json").is_file()
