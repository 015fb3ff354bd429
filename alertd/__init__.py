"""alertd: tells annotators about new OpenTrain jobs that fit them, once, where they read."""

# The one place the version is written: pyproject.toml reads it from here
# ([tool.setuptools.dynamic]), so an editable install that was not reinstalled cannot
# report an older number than the code it runs.
__version__ = "0.3.0"

__all__ = ["__version__"]
