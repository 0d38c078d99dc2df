"""Trigger tokens appear in no log line (tracebacks included) and in no error answer.

The server's log is captured as formatted text by a handler on the root logger and on the
server's and the extension's own loggers (which do not propagate), at DEBUG level. Every check
also asserts that the line it expects is there with ``[secret]``, so it cannot pass vacuously.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_mage import logscrub

from .conftest import MageClient
from .test_fault_inputs import ANON, make_trigger

MASK = "[secret]"


class Lines(logging.Handler):
    """Keeps every record as the text a log file would get (traceback included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _mage_app(serverapp: Any) -> Any:
    [app] = serverapp.extension_manager.extension_apps["jupyter_mage"]
    return app


@pytest.fixture
def log_lines(jp_serverapp: Any) -> Iterator[list[str]]:
    """The formatted lines of every log record while the test runs."""
    handler = Lines()
    app_logs = [jp_serverapp.log, _mage_app(jp_serverapp).log]
    with_handler = list({id(lg): lg for lg in [logging.getLogger(), *app_logs]}.values())
    names = ("tornado.access", "tornado.application", "tornado.general")
    leveled = list({id(lg): lg for lg in [*with_handler, *map(logging.getLogger, names)]}.values())
    levels = [lg.level for lg in leveled]
    for lg in leveled:
        lg.setLevel(logging.DEBUG)
    for lg in with_handler:
        lg.addHandler(handler)
    try:
        yield handler.lines
    finally:
        for lg in with_handler:
            lg.removeHandler(handler)
        for lg, level in zip(leveled, levels, strict=True):
            lg.setLevel(level)


def assert_scrubbed(lines: list[str], token: str, *expected: str) -> None:
    """No line holds the token (nor either half of it); each ``expected`` text is in a line
    that also holds ``[secret]``."""
    for secret in (token, token[:16], token[16:]):
        leaked = [line for line in lines if secret in line]
        assert not leaked, leaked
    for text in expected:
        assert any(text in line and MASK in line for line in lines), (text, lines[-30:])


def assert_no_token(body: bytes, *tokens: str) -> None:
    text = body.decode("utf-8", "replace")
    for token in tokens:
        assert token not in text and token[:16] not in text and token[16:] not in text, text


async def _raw_request(port: int, request: bytes) -> bytes:
    """Send bytes as they are (no client-side quoting) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        await writer.wait_closed()


# -- 6. uncaught exceptions -------------------------------------------------------------------


async def test_uncaught_exception_on_token_route_logs_no_token(
    jp_serverapp: Any, jp_fetch: Any, jp_base_url: str, jp_root_dir: Path, mage: MageClient,
    log_lines: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    trigger = await make_trigger(jp_root_dir, mage)
    token, tid = trigger["token"], str(trigger["id"])
    path = f"{jp_base_url}api/pipeline_schedules/{tid}/pipeline_runs/{token}"

    async def broken(*args: Any, **kwargs: Any) -> Any:
        # The fault's own message names the URL too, so the traceback must be scrubbed as well.
        raise RuntimeError(f"injected fault while serving {path}")

    store = _mage_app(jp_serverapp).store
    monkeypatch.setattr(store, "create_run_for_trigger", broken)
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "pipeline_schedules", tid, "pipeline_runs", token, method="POST",
                       body="{}", headers=ANON)  # fmt: skip
    assert info.value.code == 500
    assert info.value.response is not None
    body = json.loads(info.value.response.body)
    assert body["error"] == {"code": 500, "type": "internal_error", "message": "Unhandled error"}
    assert_no_token(info.value.response.body, token)
    monkeypatch.undo()
    # The server goes on: the same call now runs.
    response = await jp_fetch("api", "pipeline_schedules", tid, "pipeline_runs", token,
                              method="POST", body="{}", headers=ANON)  # fmt: skip
    done = await mage.wait(json.loads(response.body)["pipeline_run"]["id"])
    assert done["status"] == "completed"
    assert_scrubbed(
        log_lines,
        token,
        "Uncaught exception POST",  # the request summary
        "HTTPServerRequest(",  # tornado's %r of the request, with its uri
        "RuntimeError: injected fault while serving",  # the traceback
        "500 POST",  # the access log
        "200 POST",
    )


# -- 7. invalid UTF-8 in the token path -------------------------------------------------------


async def test_invalid_utf8_in_token_path_logs_and_answers_no_token(
    jp_http_port: int, jp_base_url: str, jp_root_dir: Path, mage: MageClient,
    log_lines: list[str],
) -> None:  # fmt: skip
    trigger = await make_trigger(jp_root_dir, mage)
    token, tid = trigger["token"], str(trigger["id"])
    base = f"http://localhost:{jp_http_port}{jp_base_url}api/pipeline_schedules/{tid}"
    # Percent-encoded: tornado decodes the path argument to bytes that are not UTF-8.
    for segment in (f"{token}%FF", f"{token[:10]}%C3%28{token[10:]}", f"%80{token}"):
        with pytest.raises(HTTPClientError) as info:
            await AsyncHTTPClient().fetch(
                f"{base}/pipeline_runs/{segment}", method="POST", body="{}"
            )
        assert info.value.code == 400
        assert info.value.response is not None
        assert_no_token(info.value.response.body, token)  # tornado's own 400 echoed it
        body = json.loads(info.value.response.body)
        assert body["error"]["code"] == 400 and body["error"]["type"] == "invalid_argument"
    # Raw bytes in the request line, sent as they are.
    path = f"{jp_base_url}api/pipeline_schedules/{tid}/pipeline_runs/".encode()
    for raw in (token.encode() + b"\xff", b"\xc3(" + token.encode()):
        answer = await _raw_request(
            jp_http_port,
            b"POST " + path + raw + b" HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}",
        )
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:300]
        assert_no_token(answer, token)
    await mage.call("GET", "api", "pipeline_runs")  # still answering
    assert_scrubbed(log_lines, token, "400 POST")


# -- 8. URLs the route does not match ---------------------------------------------------------


async def test_odd_slashes_in_token_urls_log_no_token(
    jp_http_port: int, jp_base_url: str, jp_root_dir: Path, mage: MageClient,
    log_lines: list[str],
) -> None:  # fmt: skip
    trigger = await make_trigger(jp_root_dir, mage)
    token, tid = trigger["token"], str(trigger["id"])
    host = f"http://localhost:{jp_http_port}"
    paths = [
        f"{jp_base_url}api/pipeline_schedules/{tid}/pipeline_runs//{token}",
        f"{jp_base_url}api/pipeline_schedules//{tid}/pipeline_runs/{token}",
        f"{jp_base_url}api//pipeline_schedules/{tid}/pipeline_runs///{token}",
        f"{jp_base_url}/api/pipeline_schedules/{tid}/pipeline_runs/{token}/",
        f"{jp_base_url}api/pipeline_schedules/{tid}/pipeline_runs%2F{token}",
        f"{jp_base_url}api/pipeline_schedules/{tid}/pipeline_runs/%2F{token}",
        f"{jp_base_url}api/pipeline_schedules/{tid}/pipeline_runs/./{token}",
        f"/api/pipeline_schedules/{tid}/pipeline_runs//{token}?x=1",  # no base URL
    ]
    for path in paths:
        with pytest.raises(HTTPClientError) as info:
            await AsyncHTTPClient().fetch(host + path, method="POST", body="{}")
        assert 400 <= info.value.code < 500, (path, info.value.code)
        assert info.value.response is not None
        assert_no_token(info.value.response.body, token)
    listing = await mage.call("GET", "api", "pipeline_runs")
    assert listing["metadata"]["count"] == 0  # none of them ran
    assert_scrubbed(log_lines, token, "pipeline_runs//[secret]", "pipeline_schedules//")


# -- 9. error answers on the token routes -----------------------------------------------------


async def test_error_answers_on_token_routes_hold_no_token(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient, log_lines: list[str]
) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    timed = await mage.create_trigger("p", schedule_type="time", schedule_interval="@daily")
    token, tid = trigger["token"], str(trigger["id"])
    near = token[:-1] + ("0" if token[-1] != "0" else "1")
    calls: list[tuple[int, tuple[str, ...], dict[str, Any]]] = [
        (403, ("api", "pipeline_schedules", tid, "pipeline_runs", near), {}),
        (403, ("api", "pipeline_schedules", str(timed["id"]), "pipeline_runs", timed["token"]),
         {}),
        (404, ("api", "pipeline_schedules", "999", "pipeline_runs", token), {}),
        (404, ("api", "pipeline_schedules", "²", "pipeline_runs", token), {}),
        (400, ("api", "pipeline_schedules", tid, "pipeline_runs", token), {"body": "{bad"}),
        (405, ("api", "pipeline_schedules", tid, "pipeline_runs", token),
         {"method": "GET", "headers": {}}),  # authenticated: anonymous GETs are 403
        (403, ("api", "pipeline_schedules", tid, "api_trigger"),
         {"headers": {"Authorization": f"Bearer {near}"}}),
        (404, ("api", "pipeline_schedules", "999", "api_trigger"),
         {"headers": {"Authorization": f"Bearer {token}"}}),
    ]  # fmt: skip
    for status, parts, kwargs in calls:
        kwargs = {"method": "POST", "body": "{}", "headers": ANON, **kwargs}
        if kwargs["method"] == "GET":
            del kwargs["body"]
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(*parts, **kwargs)
        assert info.value.code == status, (parts, info.value.code)
        assert info.value.response is not None
        body = json.loads(info.value.response.body)
        assert body["error"]["code"] == status
        assert_no_token(info.value.response.body, token, near, timed["token"])
    await mage.call("PUT", "api", "pipeline_schedules", tid,
                    body={"pipeline_schedule": {"status": "inactive"}})  # fmt: skip
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "pipeline_schedules", tid, "pipeline_runs", token, method="POST",
                       body="{}", headers=ANON)  # fmt: skip
    assert info.value.code == 409 and info.value.response is not None
    assert_no_token(info.value.response.body, token)
    assert_scrubbed(log_lines, token, "403 POST", "404 POST", "405 GET", "409 POST")
    assert_scrubbed(log_lines, near, "403 POST")


# -- the scrubber itself ----------------------------------------------------------------------

TOKEN = "3ad6b2588ee79a03304aba5b284c642f"


@pytest.mark.parametrize(
    "text",
    [
        f"200 POST /a%40b/api/pipeline_schedules/1/pipeline_runs/{TOKEN} (u@127.0.0.1) 2.1ms",
        f"404 POST /api/pipeline_schedules/1/pipeline_runs//{TOKEN}",
        f"404 POST /api/pipeline_schedules//1/pipeline_runs/{TOKEN}?wait=1",
        f"404 POST /api/pipeline_schedules/1/pipeline_runs%2F{TOKEN}",
        f"404 POST /api/pipeline_schedules/1/pipeline_runs%252f{TOKEN}",
        f"404 POST /api/pipeline_schedules/1/PIPELINE%5FRUNS/{TOKEN}",
        f"404 POST /api/pipeline_schedules/1/pipeline_runs/./{TOKEN}",
        f"404 POST /api/pipeline_schedules/1/pipeline_runs/{TOKEN}/",
        f'{{"Referer": "http://h/api/pipeline_schedules/1/pipeline_runs/{TOKEN}"}}',
        f"{{'url': 'http:\\/\\/h\\/pipeline_runs\\/{TOKEN}'}}",
        f"HTTPServerRequest(uri='/api/pipeline_schedules/1/pipeline_runs/{TOKEN}', x=1)",
        f"b'/api/pipeline_schedules/1/pipeline_runs/{TOKEN}\\xff'",
        (
            f"400 POST /x/pipeline_runs/{TOKEN}%FF (127.0.0.1): Invalid unicode in token: "
            f"b'{TOKEN}\\xff'"
        ),
        f"400 POST /x/pipeline_runs/%{TOKEN[:2]}{TOKEN[2:]} (127.0.0.1): b'{TOKEN[2:]}'",
    ],
)
def test_scrub_masks_every_shape(text: str) -> None:
    scrubbed = logscrub.scrub(text)
    assert TOKEN not in scrubbed and TOKEN[:16] not in scrubbed and TOKEN[16:] not in scrubbed
    assert MASK in scrubbed
    assert logscrub.scrub(scrubbed) == scrubbed  # scrubbing twice changes nothing more


@pytest.mark.parametrize(
    "text",
    [
        "200 GET /a%40b/api/pipeline_runs/12 (u@127.0.0.1) 2.1ms",
        "200 GET /a%40b/api/pipeline_runs/12/block_runs (u@127.0.0.1) 2.1ms",
        "200 GET /a%40b/api/pipeline_runs?_limit=3 (u@127.0.0.1) 2.1ms",
        "200 GET /a%40b/api/pipeline_schedules/1/pipeline_runs (u@127.0.0.1) 2.1ms",
        "run 5 of pipeline etl completed",
    ],
)
def test_scrub_leaves_other_lines_alone(text: str) -> None:
    assert logscrub.scrub(text) == text


def test_every_logger_is_scrubbed_also_loggers_made_later() -> None:
    logscrub.install()  # what MageApp does; idempotent
    factory = logging.getLogRecordFactory()
    logscrub.install()
    assert logging.getLogRecordFactory() is factory
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tests.fault_tokens.made_later")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    url = f"/api/pipeline_schedules/1/pipeline_runs/{TOKEN}"

    class Request:
        def __repr__(self) -> str:
            return f"Request(uri={url!r})"

    try:
        logger.info("request %r", Request())
        raw_url = url.encode() + b"\xff"
        logger.info(raw_url)
        logger.info("%(uri)s done", {"uri": url})
        try:
            raise ValueError(f"bad {url}")
        except ValueError:
            logger.exception("failed")
        logger.info("here", stack_info=True)
        broken = "bad %d at %s"
        logger.info(broken, url, url)  # arguments that do not format are scrubbed too
        logger.info("plain %s", "line")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert TOKEN not in text, text
    assert text.count(MASK) >= 5, text
    assert "ValueError: bad /api/pipeline_schedules/1/pipeline_runs/[secret]" in text
    assert "plain line" in text
