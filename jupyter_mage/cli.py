"""``jupyter mage``: the command line (``jupyter mage import <Mage project>``).

``jupyter`` runs ``jupyter-mage`` for ``jupyter mage``; it is a jupyter_core application whose
subcommands are applications of their own, so options and config files work as everywhere in
Jupyter (``--help-all``, ``c.MageImportApp.root_dir`` in ``jupyter_mage_config.py``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from jupyter_core.application import JupyterApp
from traitlets import List, Unicode, default
from traitlets.config import Config

from . import __version__
from .mage_project import NotAMageProject, Report, convert_project, import_triggers


class _ServerConfig(JupyterApp):
    """Reads the Jupyter server's config files (``jupyter_server_config.py``/``.json`` and
    ``jupyter_server_config.d/``), as the server does, without being a server."""

    name = "jupyter-server"  # config_file_name: jupyter_server_config


def _server_config() -> Config:
    """The Jupyter server's config, so that the importer writes into the database the server
    uses, with the server's root dir."""
    reader = _ServerConfig()
    reader.load_config_file()
    return reader.config


def _server_db_url() -> str:
    """``MageApp.db_url`` as the Jupyter server reads it, else the server's default."""
    from .app import MageApp

    url = _server_config().get("MageApp", {}).get("db_url")
    if isinstance(url, str) and url:
        return url
    return str(MageApp().db_url)


def _server_root_dir() -> str:
    """``ServerApp.root_dir`` as the Jupyter server reads it, else the current directory."""
    root = _server_config().get("ServerApp", {}).get("root_dir")
    return os.path.expanduser(root) if isinstance(root, str) and root else os.getcwd()


class MageImportApp(JupyterApp):
    """``jupyter mage import <Mage project dir>``."""

    name = "jupyter-mage-import"
    version = __version__
    description = """Import a Mage project: one notebook per pipeline, its triggers.yaml as triggers.

    Block code is copied unchanged into block cells (type, name, upstream, retry and timeout
    tags), pipeline variables into the notebook's metadata; the notebooks run in Mage's layout
    (working directory at the project's parent, get_repo_path() at the project). Everything not
    carried is printed as a report. Re-importing overwrites the notebooks and updates the
    triggers it made before (matched on pipeline and trigger name).
    """
    examples = """
    jupyter mage import ~/src/my_project
    jupyter mage import ~/src/my_project --pipeline etl_demo --into notebooks/mage --root-dir ~
    """

    pipeline = List(Unicode(), help="Import only these pipelines (repeat --pipeline NAME).").tag(
        config=True
    )
    into = Unicode("", help="Folder of the notebooks (default: <project>/notebooks).").tag(
        config=True
    )
    root_dir = Unicode(
        help="The Jupyter server's root dir: pipeline uuids (of triggers) are notebook paths "
        "under it. Default: ServerApp.root_dir from the server's config, else the current "
        "directory."
    ).tag(config=True)
    db_url = Unicode(
        help="Database of the triggers (default: MageApp.db_url from the Jupyter server's "
        "config, else the server's default)."
    ).tag(config=True)

    @default("root_dir")
    def _default_root_dir(self) -> str:
        return _server_root_dir()

    @default("db_url")
    def _default_db_url(self) -> str:
        return _server_db_url()

    aliases = {
        "pipeline": "MageImportApp.pipeline",
        "into": "MageImportApp.into",
        "root-dir": "MageImportApp.root_dir",
        "db-url": "MageImportApp.db_url",
    }
    flags: dict[str, Any] = {}

    def start(self) -> None:
        """Import the project named by the one positional argument; exit 1 on errors."""
        if len(self.extra_args) != 1:
            self.log.critical("give one Mage project folder: jupyter mage import <project dir>")
            self.exit(2)
        report = Report()
        try:
            _, imported = convert_project(
                self.extra_args[0], self.into or None, list(self.pipeline) or None, report
            )
        except NotAMageProject as exc:
            self.log.critical("%s", exc)
            self.exit(2)
        if any(p.triggers for p in imported):
            asyncio.run(self._write_triggers(imported, report))
        print(report.render())
        if report.errors:
            self.exit(1)

    async def _write_triggers(self, imported: list[Any], report: Report) -> None:
        from .storage import Store

        store = Store(self.db_url)
        try:
            if store.unavailable:
                report.error("", "database", f"triggers not written: {store.unavailable}")
                return
            await import_triggers(store, imported, self.root_dir, report)
        finally:
            store.close()


class MageCommandApp(JupyterApp):
    """``jupyter mage``: jupyter-mage's commands."""

    name = "jupyter-mage"
    version = __version__
    description = "jupyter-mage's commands (see jupyter mage <command> --help)."
    subcommands = {
        "import": (MageImportApp, MageImportApp.description.splitlines()[0]),
    }

    def start(self) -> None:
        """Run the subcommand, or say which there are."""
        subapp = self.subapp
        if subapp is None:
            print("jupyter mage: a command is needed: " + ", ".join(self.subcommands))
            print("  import   " + str(self.subcommands["import"][1]))
            self.exit(2)
            return
        subapp.start()


def main(argv: list[str] | None = None) -> None:
    """The ``jupyter-mage`` console script."""
    MageCommandApp.launch_instance(argv=sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
