"""Rhone Local: the single-machine Rhone control plane (started with `rhone local up`).

HTTP API (`api/`), SQLite store (`store.py`), workers (`workers.py`) and the pure domain core (`domain/`).
Data flows one way: API → store → workers.
"""

from rhone_cli import __version__  # one distribution, one version

__all__ = ["__version__"]
