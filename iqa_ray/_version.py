"""The package version, importable by any layer (the package root re-exports upper layers)."""

__version__ = "0.2.0"
