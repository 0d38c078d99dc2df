"""Mistakes found before any kernel starts: near-miss tags, syntax errors, unknown upstreams
are validation errors of ``GET api/pipelines/{uuid}``; a trigger call on such a pipeline is
refused with 422 and the errors; run keys at the wrong level of the body are a 400."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import MageClient, block_cell, write_pipeline
from .test_errors import expect_error

GOOD = "@data_loader\ndef load(*args, **kwargs):\n    return kwargs.get('env')\n"


async def _errors(mage: MageClient, uuid: str) -> list[dict[str, Any]]:
    pipeline = (await mage.call("GET", "api", "pipelines", uuid))["pipeline"]
    return pipeline["errors"]  # type: ignore[no-any-return]


async def test_a_near_miss_block_tag_is_an_error_that_names_the_tag_meant(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "typo", [
        block_cell(GOOD, "data_loader"),
        block_cell("@transformer\ndef shape(rows):\n    return rows\n", "transformr"),
        block_cell("@data_exporter\ndef save(rows):\n    pass\n", "data_exporter", "upstrem:load"),
    ])  # fmt: skip
    errors = await _errors(mage, "typo")
    messages = [e["message"] for e in errors]
    # Cells count from 1 as JupyterLab shows them (the notebook starts with a markdown cell).
    assert "cell 3: tag 'transformr' is not a block tag; did you mean 'transformer'?" in messages
    assert "cell 4: tag 'upstrem:load' is not a block tag; did you mean 'upstream:'?" in messages
    assert {e["cell_index"] for e in errors} == {2, 3}
    assert all("_jupyter_mage" not in m for m in messages)


async def test_a_syntax_error_names_the_block_and_line_and_magics_are_not_errors(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "syntax", [
        block_cell("%pip --version\n" + GOOD, "data_loader"),
        block_cell("@transformer\ndef shape(rows)\n    return rows\n", "transformer"),
        block_cell("!true\nprint('script block')\n", "custom"),
    ])  # fmt: skip
    errors = await _errors(mage, "syntax")
    assert [(e["block_uuid"], e["type"], e["cell_index"]) for e in errors] == [
        ("shape", "syntax", 2)
    ]
    assert errors[0]["message"] == "block 'shape': syntax error on line 2: expected ':'"


async def test_a_call_on_an_invalid_pipeline_is_refused_with_422_and_no_run(
    jp_root_dir: Path, jp_fetch: Any, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "broken", [
        block_cell(GOOD, "data_loader"),
        block_cell("@transformer\ndef t(x):\n    return x\n", "transformer", "upstream:ghost"),
    ])  # fmt: skip
    trigger = await mage.create_trigger("broken")
    route = ("api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs")
    body = await expect_error(jp_fetch, 422, "invalid_pipeline", *route, method="POST", body="{}")
    assert body["message"] == "pipeline 'broken' is invalid: unknown upstream block 'ghost'"
    assert body["error"]["errors"] == [
        {"block_uuid": "t", "type": "invalid", "message": "unknown upstream block 'ghost'"}
    ]
    # The token route refuses alike (after the token check), and nothing was recorded.
    token_route = (*route, trigger["token"])
    await expect_error(jp_fetch, 422, "invalid_pipeline", *token_route, method="POST", body="{}")
    runs = await mage.call("GET", "api", "pipeline_runs")
    assert runs["metadata"]["count"] == 0
    # Fixed in the notebook, the same trigger runs.
    write_pipeline(jp_root_dir, "broken", [block_cell(GOOD, "data_loader")])
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"])
    assert run["status"] == "completed"


async def test_run_keys_at_the_top_level_are_a_400_that_says_where_they_go(
    jp_root_dir: Path, jp_fetch: Any, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "p", [block_cell(GOOD, "data_loader")])
    trigger = await mage.create_trigger("p")
    route = ("api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs")
    body = await expect_error(
        jp_fetch, 400, "misplaced_field", *route,
        method="POST", body=json.dumps({"variables": {"env": "staging"}}),
    )  # fmt: skip
    assert body["message"] == (
        "'variables' must go inside 'pipeline_run': {\"pipeline_run\": {\"variables\": {...}}}"
    )
    body = await expect_error(
        jp_fetch, 400, "misplaced_field", *route,
        method="POST", body=json.dumps({"execution_date": "2026-01-01", "source": "ci"}),
    )  # fmt: skip
    assert "'execution_date' must go inside 'pipeline_run'" in body["message"]
    assert (await mage.call("GET", "api", "pipeline_runs"))["metadata"]["count"] == 0
    # Other top-level keys stay Mage's event variables.
    run = await mage.run_now(trigger["id"], {"pipeline_run": {"variables": {}}, "source": "ci"})
    assert (await mage.wait(run["id"]))["event_variables"] == {"source": "ci"}


async def test_refused_calls_show_on_the_trigger_newest_first_without_the_token(
    jp_root_dir: Path, jp_fetch: Any, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "p", [block_cell(GOOD, "data_loader")])
    trigger = await mage.create_trigger("p")
    route = ("api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs")
    wrong = "w" + trigger["token"][1:]
    await expect_error(jp_fetch, 403, "invalid_token", *route, wrong, method="POST", body="{}")
    await expect_error(jp_fetch, 400, "misplaced_field", *route,
                       method="POST", body='{"variables": {}}')  # fmt: skip
    await mage.call("PUT", "api", "pipeline_schedules", str(trigger["id"]),
                    body={"pipeline_schedule": {"status": "inactive"}})  # fmt: skip
    await expect_error(jp_fetch, 409, "trigger_inactive", *route, method="POST", body="{}")
    shown = await mage.call("GET", "api", "pipeline_schedules", str(trigger["id"]))
    refusals = shown["pipeline_schedule"]["recent_refusals"]
    assert [(r["status"], r["type"]) for r in refusals] == [
        (409, "trigger_inactive"), (400, "misplaced_field"), (403, "invalid_token")
    ]  # fmt: skip
    assert refusals[2]["reason"] == "invalid token for this trigger"
    assert all(r["time"] for r in refusals)
    text = json.dumps(refusals)
    assert trigger["token"] not in text and wrong not in text
    listing = await mage.call("GET", "api", "pipeline_schedules")
    assert listing["pipeline_schedules"][0]["recent_refusals"] == refusals
    # A call on an id that does not exist is not kept anywhere.
    await expect_error(jp_fetch, 404, "not_found", "api", "pipeline_schedules", "999",
                       "pipeline_runs", method="POST", body="{}")  # fmt: skip
    assert (await mage.call("GET", "api", "pipeline_schedules"))["pipeline_schedules"][0][
        "recent_refusals"
    ] == refusals
