"""alertd: tells annotators about new OpenTrain jobs that fit them, once, where they read."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alertd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
