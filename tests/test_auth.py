"""Every route but the two token routes needs Jupyter's auth; the check runs at start-up too."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_mage.handlers import ROUTES, BearerTriggerHandler, TokenPathTriggerHandler

TOKEN_ROUTES = (TokenPathTriggerHandler, BearerTriggerHandler)
SAMPLE = {"uuid": "p", "trigger_id": "1", "run_id": "1", "block_run_id": "1", "token": "t" * 32}


def _sample_path(pattern: str) -> list[str]:
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: SAMPLE[m.group(1)], pattern)
    return path.strip("/").split("/")


def _methods(handler: type) -> list[str]:
    return [m.upper() for m in ("get", "post", "put", "delete") if m in handler.__dict__]


@pytest.mark.parametrize(
    ("pattern", "handler"), [r for r in ROUTES if r[1] not in TOKEN_ROUTES], ids=lambda r: str(r)
)
async def test_anonymous_requests_are_refused(jp_fetch: Any, pattern: str, handler: type) -> None:
    methods = _methods(handler)
    assert methods
    for method in methods:
        body = "{}" if method in ("POST", "PUT") else None
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(*_sample_path(pattern), method=method, body=body,
                           headers={"Authorization": ""})  # fmt: skip
        assert info.value.code == 403, (method, pattern)


async def test_token_routes_are_open_but_check_the_token(jp_fetch: Any) -> None:
    for pattern, handler in ROUTES:
        if handler in TOKEN_ROUTES:
            with pytest.raises(HTTPClientError) as info:
                await jp_fetch(*_sample_path(pattern), method="POST", body="{}",
                               headers={"Authorization": ""})  # fmt: skip
            assert info.value.code == 404  # trigger 1 does not exist: no auth wall in front


def test_no_route_lacks_authentication(tmp_path: Any, db_url: str) -> None:
    """The extension template's check_auth: start a strict server, no auth warning for us."""
    from jupyter_server.serverapp import JupyterServerAuthWarning, ServerApp

    app = ServerApp(
        allow_unauthenticated_access=False,
        jpserver_extensions={"jupyter_mage": True, "jupyter_server_terminals": False},
        reraise_server_extension_failures=True,
        root_dir=str(tmp_path),
    )
    app.config.MageApp.db_url = db_url
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app.initialize(argv=[], find_extensions=False, new_httpserver=False)
    ours = [
        w for w in caught
        if issubclass(w.category, JupyterServerAuthWarning) and "jupyter_mage" in str(w.message)
    ]  # fmt: skip
    assert not ours, [str(w.message) for w in ours]
    mage = app.extension_manager.extension_apps["jupyter_mage"]
    assert mage
    for ext in mage:
        ext.store.close()
