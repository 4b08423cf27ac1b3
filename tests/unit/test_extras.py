"""Optional dependencies: a feature whose extra is not installed fails in one line naming the extra, before it
writes anything; the default run needs none of them."""

import sys

import pytest

from pipeline import formats, train
from pipeline.config import ComputeConfig
from pipeline.errors import PipelineError
from pipeline.extras import require
from pipeline.scheduler import dask_scheduler


def _missing(monkeypatch, *modules):
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # what an uninstalled package looks like to import


def test_require_names_the_extra_to_install(monkeypatch):
    _missing(monkeypatch, "sklearn", "sklearn.ensemble")
    with pytest.raises(PipelineError) as e:
        require("sklearn.ensemble", "train", "training the pixel classifier")
    assert str(e.value) == (
        "training the pixel classifier needs sklearn, which is not installed: pip install 'kachin-ree-watch[train]'"
    )
    assert require("json", "none", "anything").dumps([]) == "[]"


def test_training_without_scikit_learn_says_which_extra(monkeypatch):
    _missing(monkeypatch, "sklearn", "sklearn.ensemble")
    with pytest.raises(PipelineError, match=r"kachin-ree-watch\[train\]"):
        train.fit([[0.0]], [0])


def test_parquet_export_without_pyarrow_fails_before_reading_the_run(monkeypatch, tmp_path):
    _missing(monkeypatch, "pyarrow")
    with pytest.raises(PipelineError, match=r"kachin-ree-watch\[parquet\]"):
        formats.export_layers(tmp_path / "no-run-here", "parquet", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_cluster_without_distributed_says_which_extra(monkeypatch):
    _missing(monkeypatch, "distributed")
    with pytest.raises(PipelineError, match=r"kachin-ree-watch\[cluster\]"):
        with dask_scheduler(ComputeConfig(scheduler="tcp://127.0.0.1:1")):
            pass
