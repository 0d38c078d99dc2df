"""Fixtures: a real Jupyter server (pytest-jupyter) with jupyter-mage, real kernels, real SQLite.

pytest-jupyter serves under ``base_url = /a%40b/``, so every test also checks that routes honour
a non-root base URL. With ``JUPYTER_MAGE_TEST_DB_URL`` set, every database is PostgreSQL instead
(one empty schema per test, see ``tests/postgres.py``), and tests marked ``sqlite_only`` skip.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from . import postgres

pytest_plugins = ("pytest_jupyter.jupyter_server",)

FINISHED = ("completed", "failed", "cancelled")


# -- the database: SQLite, or PostgreSQL with JUPYTER_MAGE_TEST_DB_URL ------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): about SQLite itself (its file, its lock); skipped on the "
        "PostgreSQL pass (JUPYTER_MAGE_TEST_DB_URL), run on the default one",
    )
    config.addinivalue_line(
        "markers",
        "postgres_only(reason): about PostgreSQL itself (LISTEN/NOTIFY, row locks); run on "
        "the PostgreSQL pass, skipped on the default one",
    )


def pytest_report_header() -> str:
    return f"jupyter-mage tests' database: {postgres.describe()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name, skipped in (
            ("sqlite_only", postgres.SERVER_URL is not None),
            ("postgres_only", postgres.SERVER_URL is None),
        ):
            mark = item.get_closest_marker(name)
            if mark is None:
                continue
            reason = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "")
            if not reason:
                raise pytest.UsageError(f"{item.nodeid}: {name} needs a reason")
            if skipped:
                item.add_marker(pytest.mark.skip(reason=f"{name}: {reason}"))


def pytest_sessionfinish() -> None:
    if postgres.SERVER_URL is not None:
        postgres.drop_released()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The test's own empty database: a SQLite file in ``tmp_path``, or on the PostgreSQL pass
    a schema of its own on ``JUPYTER_MAGE_TEST_DB_URL``'s server (dropped once its servers
    have stopped)."""
    if postgres.SERVER_URL is None:
        return f"sqlite:///{tmp_path / 'mage.sqlite'}"
    return postgres.fresh_schema()


@pytest.fixture
def jp_server_config(jp_server_config: Any, db_url: str) -> dict[str, Any]:
    """Strict auth (as the extension template's tests), a temporary database."""
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_mage": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "MageApp": {"db_url": db_url},
    }


def block_cell(source: str, *tags: str) -> Any:
    """A code cell tagged as a block (not validated: the contract's comma form is no valid tag)."""
    cell = new_code_cell(source)
    cell.metadata["tags"] = list(tags)
    return cell


def write_pipeline(
    root: Path, uuid: str, cells: list[Any], variables: dict[str, Any] | None = None
) -> Path:
    """Write a pipeline notebook under the server root; returns its path."""
    nb = new_notebook(cells=[new_markdown_cell(f"# {uuid}"), *cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    if variables is not None:
        nb.metadata["mage"] = {"variables": variables}
    path = root / f"{uuid}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


#: A block that prints its kwargs (JSON-able part) on one marked line.
KWARGS_PROBE = """
import json
@data_loader
def probe(*args, **kwargs):
    plain = {k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
    kinds = {k: type(v).__name__ for k, v in kwargs.items()}
    print("KWARGS " + json.dumps({"plain": plain, "kinds": kinds,
          "tz": str(kwargs["execution_date"].tzinfo)}))
    return 1
"""


def probe_output(logs: str) -> dict[str, Any]:
    """The JSON printed by :data:`KWARGS_PROBE`."""
    for line in logs.splitlines():
        if line.startswith("KWARGS "):
            return json.loads(line[len("KWARGS ") :])  # type: ignore[no-any-return]
    raise AssertionError(f"no KWARGS line in logs: {logs[:500]!r}")


class MageClient:
    """Small helpers over ``jp_fetch`` for the Mage API."""

    def __init__(self, fetch: Callable[..., Any]) -> None:
        self.fetch = fetch

    async def call(self, method: str, *parts: str, body: Any = None, **kwargs: Any) -> Any:
        if body is not None and not isinstance(body, str | bytes):
            body = json.dumps(body)
        if method in ("POST", "PUT") and body is None:
            body = ""
        response = await self.fetch(*parts, method=method, body=body, **kwargs)
        return json.loads(response.body)

    async def create_trigger(self, uuid: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("name", "test trigger")
        data = await self.call(
            "POST",
            "api",
            "pipelines",
            uuid,
            "pipeline_schedules",
            body={"pipeline_schedule": fields},
        )
        return data["pipeline_schedule"]  # type: ignore[no-any-return]

    async def run_now(self, trigger_id: int, body: Any = None) -> dict[str, Any]:
        data = await self.call(
            "POST", "api", "pipeline_schedules", str(trigger_id), "pipeline_runs", body=body or {}
        )
        return data["pipeline_run"]  # type: ignore[no-any-return]

    async def wait(self, run_id: int, timeout: float = 90) -> dict[str, Any]:
        """Poll until the run ends; fail the test if it does not end in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            data = await self.call("GET", "api", "pipeline_runs", str(run_id))
            run = data["pipeline_run"]
            if run["status"] in FINISHED:
                return run  # type: ignore[no-any-return]
            assert loop.time() < deadline, f"run {run_id} still {run['status']}"
            await asyncio.sleep(0.05)

    async def first_block_running(self, run_id: int, tries: int) -> None:
        """Poll (50 ms apart, at most ``tries`` times) until the run's first block is running."""
        for _ in range(tries):
            run = (await self.call("GET", "api", "pipeline_runs", str(run_id)))["pipeline_run"]
            if run["block_runs"] and run["block_runs"][0]["status"] == "running":
                return
            await asyncio.sleep(0.05)

    async def logs(self, block_run_id: int) -> dict[str, Any]:
        data = await self.call("GET", "api", "block_runs", str(block_run_id), "logs")
        return data["log"]  # type: ignore[no-any-return]

    async def block_logs(self, run: dict[str, Any], block_uuid: str) -> str:
        block = next(b for b in run["block_runs"] if b["block_uuid"] == block_uuid)
        return (await self.logs(block["id"]))["content"]  # type: ignore[no-any-return]


@pytest.fixture
def mage(jp_fetch: Callable[..., Any]) -> MageClient:
    """API helpers bound to the test server."""
    return MageClient(jp_fetch)
