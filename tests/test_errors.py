"""Every error of contract section 6: real status codes, JSON bodies, no token, no traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from .conftest import MageClient, block_cell, write_pipeline

ONE_BLOCK = [block_cell("@data_loader\ndef one():\n    return 1\n", "data_loader")]


async def expect_error(
    jp_fetch: Any, status: int, error_type: str | None, *parts: str, **kwargs: Any
) -> dict[str, Any]:
    """Call and check the JSON error body; returns it."""
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*parts, **kwargs)
    assert info.value.code == status, info.value.response.body if info.value.response else None
    body = json.loads(info.value.response.body)
    assert body["error"]["code"] == status
    assert isinstance(body["message"], str) and body["message"] == body["error"]["message"]
    if error_type is not None:
        assert body["error"]["type"] == error_type, body
    assert "Traceback" not in json.dumps(body)
    return body  # type: ignore[no-any-return]


async def make_trigger(jp_root_dir: Path, mage: MageClient) -> dict[str, Any]:
    """An active API trigger of a one-block pipeline ``p``."""
    write_pipeline(jp_root_dir, "p", ONE_BLOCK)
    return await mage.create_trigger("p")


def _token_route(trigger: dict[str, Any], token: str | None = None) -> tuple[str, ...]:
    return ("api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs",
            token or trigger["token"])  # fmt: skip


ANON = {"Authorization": ""}


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_body"),
        ('"text"', "invalid_body"),
        ('{"pipeline_run": []}', "invalid_body"),
        ('{"pipeline_run": {"variables": [1]}}', "invalid_variables"),
        ('{"pipeline_run": {"variables": "env=staging"}}', "invalid_variables"),
        ('{"pipeline_run": {"status": "completed"}}', "unknown_field"),
        ('{"pipeline_run": {"id": 5, "variables": {}}}', "unknown_field"),
        ('{"pipeline_run": {"execution_date": "yesterday"}}', "invalid_execution_date"),
        ('{"pipeline_run": {"execution_date": 12}}', "invalid_execution_date"),
        ('{"pipeline_run": {"variables": {"x": NaN}}}', "invalid_json"),
        ("[" * 100000 + "]" * 100000, "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
    ],
)
async def test_bad_bodies_are_400(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient, body: Any, error_type: str
) -> None:
    api_trigger = await make_trigger(jp_root_dir, mage)
    body_json = await expect_error(
        jp_fetch, 400, error_type, *_token_route(api_trigger), method="POST", body=body,
        headers=ANON,
    )  # fmt: skip
    assert api_trigger["token"] not in json.dumps(body_json)
    runs = await mage.call("GET", "api", "pipeline_runs")
    assert runs["pipeline_runs"] == []  # nothing was accepted


async def test_wrong_or_missing_token_is_403(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    api_trigger = await make_trigger(jp_root_dir, mage)
    wrong = "0" * 32
    body = await expect_error(jp_fetch, 403, "invalid_token", *_token_route(api_trigger, wrong),
                              method="POST", body="{}", headers=ANON)  # fmt: skip
    assert wrong not in json.dumps(body) and api_trigger["token"] not in json.dumps(body)
    # An almost-right token, other lengths, and odd characters are all just wrong.
    for token in (api_trigger["token"][:-1] + "x", api_trigger["token"] + "0", "a-b.c~d"):
        await expect_error(jp_fetch, 403, "invalid_token", *_token_route(api_trigger, token),
                           method="POST", body="{}", headers=ANON)  # fmt: skip
    bearer = ("api", "pipeline_schedules", str(api_trigger["id"]), "api_trigger")
    await expect_error(jp_fetch, 403, "invalid_token", *bearer, method="POST", body="{}",
                       headers=ANON)  # fmt: skip
    await expect_error(jp_fetch, 403, "invalid_token", *bearer, method="POST", body="{}",
                       headers={"Authorization": f"Bearer {wrong}"})  # fmt: skip
    await expect_error(jp_fetch, 403, "invalid_token", *bearer, method="POST", body="{}",
                       headers={"Authorization": f"Basic {api_trigger['token']}"})  # fmt: skip


async def test_non_api_trigger_through_token_route_is_403(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "p", ONE_BLOCK)
    timed = await mage.create_trigger("p", schedule_type="time", schedule_interval="@daily")
    await expect_error(jp_fetch, 403, "not_api_trigger", *_token_route(timed), method="POST",
                       body="{}", headers=ANON)  # fmt: skip
    # "Run now" by an authenticated user works for any trigger type.
    run = await mage.run_now(timed["id"])
    assert (await mage.wait(run["id"]))["status"] == "completed"


async def test_inactive_trigger_is_409_and_stays_inactive(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    api_trigger = await make_trigger(jp_root_dir, mage)
    await mage.call("PUT", "api", "pipeline_schedules", str(api_trigger["id"]),
                    body={"pipeline_schedule": {"status": "inactive"}})  # fmt: skip
    await expect_error(jp_fetch, 409, "trigger_inactive", *_token_route(api_trigger),
                       method="POST", body="{}", headers=ANON)  # fmt: skip
    # A wrong token learns nothing about the status: 403, not 409.
    await expect_error(jp_fetch, 403, "invalid_token", *_token_route(api_trigger, "f" * 32),
                       method="POST", body="{}", headers=ANON)  # fmt: skip
    await expect_error(jp_fetch, 409, "trigger_inactive", "api", "pipeline_schedules",
                       str(api_trigger["id"]), "pipeline_runs", method="POST", body="{}")  # fmt: skip
    trigger = await mage.call("GET", "api", "pipeline_schedules", str(api_trigger["id"]))
    assert trigger["pipeline_schedule"]["status"] == "inactive"  # Mage would re-activate it
    assert trigger["pipeline_schedule"]["pipeline_runs_count"] == 0


async def test_unknown_ids_are_404(jp_fetch: Any, jp_root_dir: Path, mage: MageClient) -> None:
    api_trigger = await make_trigger(jp_root_dir, mage)
    for parts in (
        ("api", "pipeline_schedules", "999", "pipeline_runs", api_trigger["token"]),
        ("api", "pipeline_schedules", "abc", "pipeline_runs", api_trigger["token"]),
        ("api", "pipeline_schedules", "999", "api_trigger"),
    ):
        await expect_error(jp_fetch, 404, "not_found", *parts, method="POST", body="{}",
                           headers={"Authorization": f"Bearer {api_trigger['token']}"})  # fmt: skip
    for parts in (
        ("api", "pipeline_schedules", "999"),
        ("api", "pipeline_schedules", "999", "pipeline_runs"),
        ("api", "pipeline_runs", "999"),
        ("api", "pipeline_runs", "-1"),
        ("api", "pipeline_runs", "999", "block_runs"),
        ("api", "block_runs", "999", "outputs"),
        ("api", "block_runs", "999", "logs"),
        ("api", "pipelines", "nope"),
        ("api", "pipelines", "..", "..", "etc", "passwd"),
        ("api", "pipelines", "a", "..", "..", "x"),
        ("api", "pipelines", "nope", "pipeline_schedules"),
    ):
        await expect_error(jp_fetch, 404, "not_found", *parts, method="GET")
    await expect_error(jp_fetch, 404, "not_found", "api", "pipelines", "nope",
                       "pipeline_schedules", method="POST",
                       body='{"pipeline_schedule": {"name": "x"}}')  # fmt: skip


async def test_trigger_of_deleted_pipeline_is_404(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    api_trigger = await make_trigger(jp_root_dir, mage)
    (jp_root_dir / "p.ipynb").unlink()
    await expect_error(jp_fetch, 404, "not_found", *_token_route(api_trigger), method="POST",
                       body="{}", headers=ANON)  # fmt: skip


async def test_body_over_limit_is_413(jp_fetch: Any, jp_root_dir: Path, mage: MageClient) -> None:
    api_trigger = await make_trigger(jp_root_dir, mage)
    big = json.dumps({"pipeline_run": {"variables": {"x": "y" * (10 * 1024 * 1024)}}})
    await expect_error(jp_fetch, 413, "payload_too_large", *_token_route(api_trigger),
                       method="POST", body=big, headers=ANON)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        ({}, "invalid_body"),
        ({"pipeline_schedule": {}}, "invalid_field"),
        ({"pipeline_schedule": {"name": "  "}}, "invalid_field"),
        ({"pipeline_schedule": {"name": "x", "schedule_type": "cron"}}, "invalid_field"),
        ({"pipeline_schedule": {"name": "x", "status": "paused"}}, "invalid_field"),
        ({"pipeline_schedule": {"name": "x", "variables": [1]}}, "invalid_variables"),
        ({"pipeline_schedule": {"name": "x", "settings": {"bogus": 1}}}, "invalid_field"),
        (
            {"pipeline_schedule": {"name": "x", "settings": {"allow_blocks_to_fail": "yes"}}},
            "invalid_field",
        ),
        ({"pipeline_schedule": {"name": "x", "sla": -5}}, "invalid_field"),
        ({"pipeline_schedule": {"name": "x", "rotate_token": True}}, "invalid_field"),
        ({"pipeline_schedule": {"name": "x", "drop_table": True}}, "unknown_field"),
        ({"pipeline_schedule": {"name": "x", "schedule_interval": "every day"}}, "invalid_field"),
    ],
)
async def test_bad_trigger_bodies_are_400(
    jp_fetch: Any, jp_root_dir: Path, body: dict[str, Any], error_type: str
) -> None:

    write_pipeline(jp_root_dir, "p", ONE_BLOCK)
    await expect_error(jp_fetch, 400, error_type, "api", "pipelines", "p", "pipeline_schedules",
                       method="POST", body=json.dumps(body))  # fmt: skip


async def test_bad_run_updates_and_queries(
    jp_fetch: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    api_trigger = await make_trigger(jp_root_dir, mage)
    run = await mage.wait((await mage.run_now(api_trigger["id"]))["id"])
    run_path = ("api", "pipeline_runs", str(run["id"]))
    await expect_error(jp_fetch, 400, "invalid_body", *run_path, method="PUT",
                       body='{"pipeline_run": {"status": "completed"}}')  # fmt: skip
    await expect_error(jp_fetch, 409, "run_finished", *run_path, method="PUT",
                       body='{"pipeline_run": {"status": "cancelled"}}')  # fmt: skip
    await expect_error(jp_fetch, 409, "run_not_retryable", *run_path, method="PUT",
                       body='{"pipeline_run": {"pipeline_run_action": "retry_blocks"}}')  # fmt: skip
    await expect_error(jp_fetch, 400, "invalid_parameter", "api", "pipeline_runs", method="GET",
                       params={"_limit": "ten"})  # fmt: skip
    await expect_error(jp_fetch, 400, "invalid_parameter", "api", "pipeline_runs", method="GET",
                       params={"status": "exploded"})  # fmt: skip
    await expect_error(jp_fetch, 400, "invalid_parameter", "api", "block_runs", method="GET")


async def test_wrong_method_is_405_json(jp_fetch: Any, jp_root_dir: Path, mage: MageClient) -> None:
    api_trigger = await make_trigger(jp_root_dir, mage)
    await expect_error(jp_fetch, 405, "method_not_allowed", *_token_route(api_trigger),
                       method="GET")  # fmt: skip
