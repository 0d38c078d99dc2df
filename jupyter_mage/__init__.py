"""jupyter-mage: turn Jupyter notebooks into pipelines that other systems trigger over HTTP.

A pipeline is a notebook; its tagged code cells are blocks. Block code is written as in Mage:

    from jupyter_mage import data_loader, transformer, data_exporter, test

In a notebook, a block cell run by hand runs its block at once (see :mod:`jupyter_mage.handrun`);
``%load_ext jupyter_mage`` also defines the decorators, for Mage's guarded imports.
"""

from __future__ import annotations

from typing import Any

from .handrun import (
    callback,
    condition,
    custom,
    data_exporter,
    data_loader,
    load_ipython_extension,
    on_failure,
    on_success,
    sensor,
    test,
    transformer,
    unload_ipython_extension,
)


def _version() -> str:
    """The installed distribution's version; in a source checkout, labextension/package.json's.

    labextension/package.json is the single source: hatch writes it into the metadata at build.
    """
    import json
    from importlib import metadata
    from pathlib import Path

    try:
        return metadata.version("jupyter_mage")
    except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
        package_json = Path(__file__).resolve().parent.parent / "labextension" / "package.json"
        try:
            return str(json.loads(package_json.read_text(encoding="utf-8"))["version"])
        except (OSError, ValueError, KeyError):
            return "0+unknown"


__version__ = _version()
__all__ = [
    "callback",
    "condition",
    "custom",
    "data_exporter",
    "data_loader",
    "load_ipython_extension",
    "on_failure",
    "on_success",
    "sensor",
    "test",
    "transformer",
    "unload_ipython_extension",
]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import MageApp

    return [{"module": "jupyter_mage", "app": MageApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-mage"}]
