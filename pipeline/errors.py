"""The exceptions the pipeline raises on purpose.

Each message is one line that names what failed and how to fix it; the CLI prints it and exits non-zero.
"""


class PipelineError(Exception):
    """Base class: an expected failure with a message meant for the user, kept on one line (a library's
    error quoted in it may end in a newline, as GEOS's do)."""

    exit_code = 1

    def __init__(self, message: str = "", *args):
        super().__init__(" ".join(line.strip() for line in str(message).splitlines() if line.strip()), *args)


class ConfigError(PipelineError):
    """The run configuration or a command-line option is wrong."""

    exit_code = 2


class AOIError(PipelineError):
    """The AOI file is missing, unreadable or not a usable polygon."""

    exit_code = 2


class LabelError(PipelineError):
    """A file of real labels (mapped pools, mine and non-mine points, detections) is missing or unusable."""

    exit_code = 2


class SourceError(PipelineError):
    """A scene source (catalog, API, file) cannot be read."""


class NoScenesError(PipelineError):
    """No usable scene for the AOI and period."""

    exit_code = 3


class OutputError(PipelineError):
    """The output directory cannot be written safely."""


class RegistryError(SourceError):
    """pip cannot fetch a package from the package index (offline, proxy, index down)."""
