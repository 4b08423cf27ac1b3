"""Optional dependencies: what the default run (threads here, rule-based classes, GeoPackage outputs) does
not need is an extra of the package, imported only by the feature that uses it."""

from __future__ import annotations

import importlib
from types import ModuleType

from pipeline.errors import PipelineError

PACKAGE = "kachin-ree-watch"


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or fail in one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PipelineError(
            f"{feature} needs {module.split('.')[0]}, which is not installed: pip install '{PACKAGE}[{extra}]'"
        ) from None
