"""Hostile inputs: every one is a clear 4xx JSON answer, never a 500, and nothing is accepted.

Each test also checks that the server keeps answering afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from .conftest import MageClient, block_cell, write_pipeline

ONE_BLOCK = [block_cell("@data_loader\ndef one(**kwargs):\n    return 1\n", "data_loader")]
ANON = {"Authorization": ""}


async def expect_error(
    jp_fetch: Any, status: int, error_type: str | None, *parts: str, **kwargs: Any
) -> dict[str, Any]:
    """Call, expect ``status`` with the JSON error body of contract section 6; returns it."""
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*parts, **kwargs)
    response = info.value.response
    assert info.value.code == status, (parts, response.body if response else None)
    assert response is not None
    body = json.loads(response.body)
    assert set(body) >= {"message", "error"}, body
    assert set(body["error"]) == {"code", "type", "message"}, body
    assert body["error"]["code"] == status
    assert isinstance(body["message"], str) and body["message"] == body["error"]["message"]
    if error_type is not None:
        assert body["error"]["type"] == error_type, body
    assert "Traceback" not in response.body.decode("utf-8", "replace")
    return body  # type: ignore[no-any-return]


async def still_answers(mage: MageClient, runs: int = 0) -> None:
    """The server answers a plain call, and holds exactly ``runs`` runs."""
    listing = await mage.call("GET", "api", "pipeline_runs")
    assert listing["metadata"]["count"] == runs, listing


async def make_trigger(jp_root_dir: Path, mage: MageClient, **fields: Any) -> dict[str, Any]:
    """An active API trigger of a one-block pipeline ``p``."""
    write_pipeline(jp_root_dir, "p", ONE_BLOCK)
    return await mage.create_trigger("p", **fields)


def _run_body(variables: Any = None, **run: Any) -> str:
    if variables is not None:
        run["variables"] = variables
    return json.dumps({"pipeline_run": run})


# -- 1. path ids ------------------------------------------------------------------------------

# "²" and "①" pass str.isdigit() but not int(); the Arabic-Indic one passes both and used to
# alias trigger/run 1; "1_0" and "+1" pass int(); 19 digits overflow a 64-bit SQL integer.
ARABIC_ONE = "\u0661"
BAD_IDS = ["²", "①", ARABIC_ONE, "1_0", "+1", "9" * 19]


def _id_routes(bad: str, token: str) -> list[tuple[str, tuple[str, ...], dict[str, Any]]]:
    """(method, path, fetch kwargs) for every route with an id, authenticated and anonymous."""
    trigger = ("api", "pipeline_schedules", bad)
    schedule_body = json.dumps({"pipeline_schedule": {"name": "x"}})
    cancel = json.dumps({"pipeline_run": {"status": "cancelled"}})
    bearer = {"Authorization": f"Bearer {token}"}
    return [
        ("GET", trigger, {}),
        ("PUT", trigger, {"body": schedule_body}),
        ("DELETE", trigger, {}),
        ("GET", (*trigger, "pipeline_runs"), {}),
        ("POST", (*trigger, "pipeline_runs"), {"body": "{}"}),
        ("POST", (*trigger, "pipeline_runs", token), {"body": "{}"}),
        ("POST", (*trigger, "pipeline_runs", token), {"body": "{}", "headers": ANON}),
        ("POST", (*trigger, "api_trigger"), {"body": "{}"}),
        ("POST", (*trigger, "api_trigger"), {"body": "{}", "headers": bearer}),
        ("GET", ("api", "pipeline_runs", bad), {}),
        ("PUT", ("api", "pipeline_runs", bad), {"body": cancel}),
        ("GET", ("api", "pipeline_runs", bad, "block_runs"), {}),
        ("GET", ("api", "block_runs", bad, "outputs"), {}),
        ("GET", ("api", "block_runs", bad, "logs"), {}),
    ]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_non_ascii_or_odd_path_ids_are_404_on_every_route(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient, bad: str
) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    # Trigger 1, run 1 and block run 1 exist, so an id that aliases 1 would be found.
    done = await mage.wait((await mage.run_now(trigger["id"]))["id"])
    assert trigger["id"] == done["id"] == done["block_runs"][0]["id"] == 1
    for method, parts, kwargs in _id_routes(bad, trigger["token"]):
        body = await expect_error(jp_fetch, 404, "not_found", *parts, method=method, **kwargs)
        assert trigger["token"] not in json.dumps(body)
    await still_answers(mage, runs=1)
    listing = await mage.call("GET", "api", "pipeline_schedules")
    assert [t["id"] for t in listing["pipeline_schedules"]] == [1]  # not deleted through ARABIC_ONE


# -- 2. dates ---------------------------------------------------------------------------------

BAD_DATES = [
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC: OverflowError
    "9999-12-31T23:59:59-01:00",  # after 9999 in UTC: OverflowError
    "0999-12-31T23:59:59",  # exists, but strftime writes "999-12-31" and it never reads back
    "1000-01-01T00:30:00+01:00",  # 0999-12-31 in UTC
    "2026-02-30T00:00:00",
]


@pytest.mark.parametrize("date", BAD_DATES)
async def test_dates_out_of_range_are_400(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient, date: str
) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    await expect_error(jp_fetch, 400, "invalid_execution_date", "api", "pipeline_schedules",
                       str(trigger["id"]), "pipeline_runs", trigger["token"], method="POST",
                       body=_run_body(execution_date=date), headers=ANON)  # fmt: skip
    await expect_error(jp_fetch, 400, "invalid_execution_date", "api", "pipeline_schedules",
                       str(trigger["id"]), "pipeline_runs", method="POST",
                       body=_run_body(execution_date=date))  # fmt: skip
    # A trigger's start_time goes through the same check.
    await expect_error(jp_fetch, 400, "invalid_execution_date", "api", "pipelines", "p",
                       "pipeline_schedules", method="POST",
                       body=json.dumps({"pipeline_schedule": {"name": "t", "start_time": date}}))  # fmt: skip
    await still_answers(mage)


async def test_dates_at_the_bounds_run_and_read_back(jp_root_dir: Path, mage: MageClient) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    for date, stored in (
        ("9999-12-31T23:59:59.999999+00:00", "9999-12-31 23:59:59.999999+00:00"),
        ("1000-01-01T01:00:00+01:00", "1000-01-01 00:00:00.000000+00:00"),
    ):
        run = await mage.run_now(trigger["id"], {"pipeline_run": {"execution_date": date}})
        assert run["execution_date"] == stored
        done = await mage.wait(run["id"])
        assert done["status"] == "completed", done
        assert done["execution_date"] == stored


# -- 3. query integers ------------------------------------------------------------------------

HUGE = "99999999999999999999999"


async def test_query_integers_are_ascii_and_bounded(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    listings = (("api", "pipeline_runs"),
                ("api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs"))  # fmt: skip
    for parts in listings:
        for name, value in (
            ("_offset", HUGE),  # used to overflow the SQL integer: 500
            ("_offset", str(10**9 + 1)),
            ("_limit", HUGE),
            ("_offset", "1_0"),
            ("_limit", "1_000"),
            ("_limit", "²"),
            ("_offset", ARABIC_ONE),
            ("_limit", "-1"),
            ("_offset", "+1"),
        ):
            await expect_error(jp_fetch, 400, "invalid_parameter", *parts, method="GET",
                               params={name: value})  # fmt: skip
        page = await mage.call("GET", *parts, params={"_offset": str(10**9), "_limit": "5000"})
        assert page == {"pipeline_runs": [], "metadata": {"count": 0, "next": False}}
    for parts, name in (
        (("api", "pipeline_runs"), "pipeline_schedule_id"),
        (("api", "block_runs"), "pipeline_run_id"),
        (("api", "pipelines", "p", "logs"), "pipeline_run_id[]"),
        (("api", "pipelines", "p", "logs"), "pipeline_run_id"),
    ):
        for value in (HUGE, "9" * 19, ARABIC_ONE, "1_0", "²"):
            await expect_error(jp_fetch, 400, "invalid_parameter", *parts, method="GET",
                               params={name: value})  # fmt: skip
    # ?wait= takes plain ASCII decimals only (ARABIC_ONE and "1_0" used to start a run).
    for value in (ARABIC_ONE, "1_0", "1e3", "inf", "nan", "-1", "0x10", ""):
        await expect_error(jp_fetch, 400, "invalid_parameter", "api", "pipeline_schedules",
                           str(trigger["id"]), "pipeline_runs", trigger["token"], method="POST",
                           body="{}", headers=ANON, params={"wait": value})  # fmt: skip
    await still_answers(mage)
    # Ordinary values still work.
    runs = await mage.call("GET", "api", "pipeline_runs", params={"_limit": " 10", "_offset": "0"})
    assert runs["metadata"] == {"count": 0, "next": False}


# -- 4. non-finite numbers --------------------------------------------------------------------

NOT_FINITE = ["1e999", "-1e999", "1E400", "123456789e999", "NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize("number", NOT_FINITE)
async def test_non_finite_numbers_are_400_everywhere(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient, number: str
) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    tid = str(trigger["id"])
    run_body = f'{{"pipeline_run": {{"variables": {{"x": [1, {number}]}}}}}}'
    await expect_error(jp_fetch, 400, "invalid_json", "api", "pipeline_schedules", tid,
                       "pipeline_runs", trigger["token"], method="POST", body=run_body,
                       headers=ANON)  # fmt: skip
    await expect_error(jp_fetch, 400, "invalid_json", "api", "pipeline_schedules", tid,
                       "pipeline_runs", method="POST", body=run_body)  # fmt: skip
    await expect_error(jp_fetch, 400, "invalid_json", "api", "pipeline_schedules", tid,
                       "pipeline_runs", trigger["token"], method="POST", headers=ANON,
                       body=f'{{"event_value": {number}}}')  # fmt: skip
    # Trigger create and update: variables and settings.
    for schedule in (
        f'{{"name": "n", "variables": {{"x": {number}}}}}',
        f'{{"name": "n", "settings": {{"timeout": {number}}}}}',
    ):
        await expect_error(jp_fetch, 400, "invalid_json", "api", "pipelines", "p",
                           "pipeline_schedules", method="POST",
                           body=f'{{"pipeline_schedule": {schedule}}}')  # fmt: skip
        await expect_error(jp_fetch, 400, "invalid_json", "api", "pipeline_schedules", tid,
                           method="PUT", body=f'{{"pipeline_schedule": {schedule}}}')  # fmt: skip
    after = (await mage.call("GET", "api", "pipeline_schedules", tid))["pipeline_schedule"]
    assert after["variables"] == trigger["variables"] and after["settings"] == trigger["settings"]
    # The pipeline's variables live in the notebook file: it must not change.
    notebook = jp_root_dir / "p.ipynb"
    before = notebook.read_bytes()
    await expect_error(jp_fetch, 400, "invalid_json", "mage", "pipelines", "p", "variables",
                       method="PUT", body=f'{{"variables": {{"x": {number}}}}}')  # fmt: skip
    assert notebook.read_bytes() == before
    await still_answers(mage)
    listing = await mage.call("GET", "api", "pipeline_schedules")
    assert len(listing["pipeline_schedules"]) == 1


async def test_large_finite_numbers_are_accepted(jp_root_dir: Path, mage: MageClient) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    run = await mage.run_now(trigger["id"], {"pipeline_run": {"variables": {"x": 1.7e308}}})
    assert run["variables"]["x"] == 1.7e308
    assert (await mage.wait(run["id"]))["status"] == "completed"


# -- 5. nesting -------------------------------------------------------------------------------


def _nested(depth: int, kind: str = "list") -> str:
    """JSON text of ``depth`` nested arrays (or objects) around 0."""
    if kind == "list":
        return "[" * depth + "0" + "]" * depth
    return '{"a": ' * depth + "0" + "}" * depth


@pytest.mark.parametrize("kind", ["list", "dict"])
async def test_deep_nesting_is_400(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient, kind: str
) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    tid = str(trigger["id"])
    notebook = jp_root_dir / "p.ipynb"
    before = notebook.read_bytes()
    # {"pipeline_run": {"variables": {"x": ...}}} is 3 levels around the value, the variables
    # PUT 2: 63 levels inside is too deep for every route.
    for depth in (63, 970, 5000):
        body = f'{{"pipeline_run": {{"variables": {{"x": {_nested(depth, kind)}}}}}}}'
        await expect_error(jp_fetch, 400, "invalid_json", "api", "pipeline_schedules", tid,
                           "pipeline_runs", trigger["token"], method="POST", body=body,
                           headers=ANON)  # fmt: skip
        await expect_error(jp_fetch, 400, "invalid_json", "mage", "pipelines", "p", "variables",
                           method="PUT",
                           body=f'{{"variables": {{"x": {_nested(depth, kind)}}}}}')  # fmt: skip
        await expect_error(jp_fetch, 400, "invalid_json", "api", "pipelines", "p",
                           "pipeline_schedules", method="POST",
                           body=f'{{"pipeline_schedule": {{"name": "n", "variables": '
                           f'{{"x": {_nested(depth, kind)}}}}}}}')  # fmt: skip
    assert notebook.read_bytes() == before
    await still_answers(mage)
    # 64 levels in all is the bound: accepted, and the run completes with it.
    body = f'{{"pipeline_run": {{"variables": {{"x": {_nested(61, kind)}}}}}}}'
    response = await jp_fetch("api", "pipeline_schedules", tid, "pipeline_runs", trigger["token"],
                              method="POST", body=body, headers=ANON)  # fmt: skip
    run = json.loads(response.body)["pipeline_run"]
    assert (await mage.wait(run["id"]))["status"] == "completed"


async def test_wide_shallow_bodies_are_accepted(jp_root_dir: Path, mage: MageClient) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    rows = [{"id": i, "tags": [str(i)]} for i in range(2000)]  # many brackets, depth 5
    run = await mage.run_now(trigger["id"], {"pipeline_run": {"variables": {"rows": rows}}})
    assert run["variables"]["rows"] == rows
    assert (await mage.wait(run["id"]))["status"] == "completed"


# -- other text the database or the notebook file could not store -----------------------------


async def test_lone_surrogates_are_400(jp_fetch: Any, jp_root_dir: Path, mage: MageClient) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    notebook = jp_root_dir / "p.ipynb"
    before = notebook.read_bytes()
    for escape in ("\\ud800", "\\uDFFF", "x\\udc00y"):
        await expect_error(jp_fetch, 400, "invalid_json", "api", "pipelines", "p",
                           "pipeline_schedules", method="POST",
                           body=f'{{"pipeline_schedule": {{"name": "{escape}"}}}}')  # fmt: skip
        await expect_error(jp_fetch, 400, "invalid_json", "mage", "pipelines", "p", "variables",
                           method="PUT", body=f'{{"variables": {{"a": ["{escape}"]}}}}')  # fmt: skip
        await expect_error(jp_fetch, 400, "invalid_json", "mage", "pipelines", "p", "variables",
                           method="PUT", body=f'{{"variables": {{"{escape}": 1}}}}')  # fmt: skip
        await expect_error(jp_fetch, 400, "invalid_json", "api", "pipeline_schedules",
                           str(trigger["id"]), "pipeline_runs", trigger["token"], method="POST",
                           headers=ANON,
                           body=f'{{"pipeline_run": {{"variables": {{"a": "{escape}"}}}}}}')  # fmt: skip
    assert notebook.read_bytes() == before
    await still_answers(mage)
    # A surrogate pair is one character, and an escaped backslash is no escape.
    raw = '{"pipeline_schedule": {"name": "\\ud83d\\ude00 \\\\ud800"}}'
    created = await mage.call("POST", "api", "pipelines", "p", "pipeline_schedules", body=raw)
    assert created["pipeline_schedule"]["name"] == "\U0001f600 \\ud800"


@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "x", "sla": 10**23},  # used to overflow the SQL integer: 500
        {"name": "x", "sla": 10**9 + 1},
        {"name": "x", "settings": {"pipeline_run_limit": 10**23}},
        {"name": "x", "settings": {"timeout": 10**23}},
        {"name": "x", "settings": {"timeout": 1e300}},
        {"name": "bad\x00name"},
        {"name": "x", "description": "a\x00b"},
        {"name": "x", "schedule_interval": "*/5 * * * " + "1," * 30 + "1"},
    ],
)
async def test_trigger_fields_fit_the_database(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient, schedule: dict[str, Any]
) -> None:
    trigger = await make_trigger(jp_root_dir, mage)
    body = json.dumps({"pipeline_schedule": schedule})
    await expect_error(jp_fetch, 400, "invalid_field", "api", "pipelines", "p",
                       "pipeline_schedules", method="POST", body=body)  # fmt: skip
    await expect_error(jp_fetch, 400, "invalid_field", "api", "pipeline_schedules",
                       str(trigger["id"]), method="PUT", body=body)  # fmt: skip
    listing = (await mage.call("GET", "api", "pipeline_schedules"))["pipeline_schedules"]
    assert [t["id"] for t in listing] == [trigger["id"]]
    fields = ("name", "description", "sla", "settings", "schedule_interval", "updated_at")
    assert {k: listing[0][k] for k in fields} == {k: trigger[k] for k in fields}
    await still_answers(mage)
