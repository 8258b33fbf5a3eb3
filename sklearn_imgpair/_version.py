"""The package's version, in one place for the package, its model files and its build."""

__version__ = "0.1.0"
