"""Triggering pipelines over HTTP: the three routes, kwargs, hostile variables, failures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nbformat
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from .conftest import KWARGS_PROBE, MageClient, block_cell, probe_output, write_pipeline

SEED = {"pipeline_run": {"variables": {"env": "staging", "schema": "public"}}}

ETL = [
    block_cell(
        "if 'data_loader' not in globals():\n"
        "    from mage_ai.data_preparation.decorators import data_loader\n"
        "@data_loader\n"
        "def load(*args, **kwargs):\n"
        "    print(f\"load env={kwargs['env']} schema={kwargs['schema']}\")\n"
        "    return [1, 2, 3]\n",
        "data_loader",
    ),
    block_cell(
        "@transformer\n"
        "def double(rows, **kwargs):\n"
        "    print(f\"transform env={kwargs['env']} schema={kwargs['schema']}\")\n"
        "    return [r * 2 for r in rows]\n",
        "transformer",
    ),
    block_cell(
        "@data_exporter\n"
        "def export(rows, *args, **kwargs):\n"
        "    print(f\"export env={kwargs['env']} schema={kwargs['schema']} rows={rows}\")\n",
        "data_exporter",
    ),
]


async def _assert_seed_run(mage: MageClient, run: dict[str, Any]) -> None:
    assert run["status"] == "initial"
    assert run["variables"]["env"] == "staging"
    assert run["variables"]["execution_partition"].startswith(f"{run['pipeline_schedule_id']}/")
    done = await mage.wait(run["id"])
    assert done["status"] == "completed", done
    assert [b["status"] for b in done["block_runs"]] == ["completed"] * 3
    for name in ("load", "double", "export"):
        assert "env=staging schema=public" in await mage.block_logs(done, name)
    assert "rows=[2, 4, 6]" in await mage.block_logs(done, "export")


async def test_run_now_route_runs_the_seed_request(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "pipelines/etl", ETL)
    trigger = await mage.create_trigger("pipelines/etl")
    run = await mage.run_now(trigger["id"], SEED)
    assert set(run) >= {
        "id", "pipeline_schedule_id", "pipeline_uuid", "execution_date", "status", "started_at",
        "completed_at", "variables", "event_variables", "passed_sla", "metrics", "backfill_id",
        "executor_type", "created_at", "updated_at",
    }  # fmt: skip
    await _assert_seed_run(mage, run)


async def test_token_in_path_route(
    jp_root_dir: Path, jp_fetch: Any, jp_base_url: str, jp_http_port: int, jp_auth_header: Any,
    mage: MageClient,
) -> None:  # fmt: skip
    write_pipeline(jp_root_dir, "pipelines/etl", ETL)
    # The uuid percent-encoded in the URL works as well as the plain one.
    url = f"http://localhost:{jp_http_port}{jp_base_url}api/pipelines/pipelines%2Fetl/pipeline_schedules"
    response = await AsyncHTTPClient().fetch(
        url, method="POST", headers=jp_auth_header,
        body=json.dumps({"pipeline_schedule": {"name": "encoded"}}),
    )  # fmt: skip
    trigger = json.loads(response.body)["pipeline_schedule"]
    assert trigger["pipeline_uuid"] == "pipelines/etl"
    response = await jp_fetch(
        "api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs", trigger["token"],
        method="POST", body=json.dumps(SEED), headers={"Authorization": ""},
    )  # fmt: skip
    assert response.code == 200
    await _assert_seed_run(mage, json.loads(response.body)["pipeline_run"])


async def test_bearer_route(jp_root_dir: Path, jp_fetch: Any, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "pipelines/etl", ETL)
    trigger = await mage.create_trigger("pipelines/etl")
    response = await jp_fetch(
        "api", "pipeline_schedules", str(trigger["id"]), "api_trigger",
        method="POST", body=json.dumps(SEED),
        headers={"Authorization": f"Bearer {trigger['token']}"},
    )  # fmt: skip
    await _assert_seed_run(mage, json.loads(response.body)["pipeline_run"])


async def test_kwargs_precedence_and_system_keys(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(
        jp_root_dir,
        "layers",
        [block_cell(KWARGS_PROBE, "data_loader")],
        variables={"a": "global", "b": "global", "c": "global", "d": "global", "keep": "global"},
    )
    trigger = await mage.create_trigger(
        "layers", name="nightly", variables={"b": "trigger", "c": "trigger", "d": "trigger"}
    )
    body = {
        "pipeline_run": {
            "variables": {"c": "run", "d": "run"},
            "execution_date": "2026-03-04T05:06:07.000008+00:00",
        },
        "d": "event",
        "e": "event",
    }
    run = await mage.wait((await mage.run_now(trigger["id"], body))["id"])
    assert run["status"] == "completed"
    assert run["event_variables"] == {"d": "event", "e": "event"}
    seen = probe_output(await mage.block_logs(run, "probe"))
    plain, kinds = seen["plain"], seen["kinds"]
    # global < trigger < run; event keys only fill gaps; env defaults to prod.
    assert (plain["a"], plain["b"], plain["c"], plain["d"], plain["e"]) == (
        "global", "trigger", "run", "run", "event",
    )  # fmt: skip
    assert plain["keep"] == "global"
    assert plain["env"] == "prod"
    # System keys.
    assert kinds["execution_date"] == "datetime" and seen["tz"] == "UTC"
    assert plain["ds"] == "2026-03-04" and plain["hr"] == "05"
    assert plain["event"] == {"d": "event", "e": "event"}
    assert plain["execution_partition"] == f"{trigger['id']}/20260304T050607_000008"
    assert plain["pipeline_run_id"] == run["id"]
    assert plain["trigger_name"] == "nightly"
    assert plain["pipeline_uuid"] == "layers"
    assert plain["block_uuid"] == "probe"
    assert plain["retry"] == {"attempts": 1}
    assert kinds["logger"] == "Logger" and kinds["context"] == "dict"


async def test_system_keys_win_and_env_is_honoured(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "sys", [block_cell(KWARGS_PROBE, "data_loader")])
    trigger = await mage.create_trigger("sys")
    body = {"pipeline_run": {"variables": {"env": "staging", "ds": "fake", "pipeline_uuid": "x"}}}
    run = await mage.wait((await mage.run_now(trigger["id"], body))["id"])
    plain = probe_output(await mage.block_logs(run, "probe"))["plain"]
    assert plain["env"] == "staging"
    assert plain["ds"] != "fake" and plain["pipeline_uuid"] == "sys"


HOSTILE = {
    "quote": "it's \"quoted\" '''triple''' \"\"\"",
    "code": "__import__('os').system('touch PWNED')",
    "newline": "line1\nline2\r\n)\nimport os; os.system('touch PWNED')\n#",
    "unicode": "ünïcødé ✓ \u2028 \x00 end",
    "huge": "x" * 2_000_000,
    "nested": {"list": [1, 2.5, None, True], "obj": {"k": "v"}},
    "__import__('os').system('touch PWNED')": "hostile key",
    "a'); import os; os.system('touch PWNED'); ('": 1,
    "\n#": "newline key",
}

HOSTILE_PROBE = """
import hashlib, json
@data_loader
def probe(**kwargs):
    keys = [k for k in kwargs if k not in ("execution_date", "logger", "context", "retry",
            "block_uuid", "pipeline_run_id", "trigger_name", "pipeline_uuid", "ds", "hr", "event",
            "execution_partition", "env")]
    data = {k: kwargs[k] for k in sorted(keys)}
    text = json.dumps(data, sort_keys=True)
    print("DIGEST " + hashlib.sha256(text.encode()).hexdigest() + " " + str(len(text)))
"""


async def test_hostile_variables_arrive_as_data(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "hostile", [block_cell(HOSTILE_PROBE, "data_loader")])
    trigger = await mage.create_trigger("hostile")
    run = await mage.run_now(trigger["id"], {"pipeline_run": {"variables": HOSTILE}})
    run = await mage.wait(run["id"])
    assert run["status"] == "completed", run
    text = json.dumps(HOSTILE, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert f"DIGEST {digest} {len(text)}" in await mage.block_logs(run, "probe")
    assert not list(jp_root_dir.rglob("PWNED")) and not Path("PWNED").exists()


async def test_hostile_event_keys_are_data(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "event", [block_cell(KWARGS_PROBE, "data_loader")])
    trigger = await mage.create_trigger("event")
    body = {"\"); __import__('os').system('touch PWNED') #": 'x"""\n', "pipeline_run": {}}
    run = await mage.wait((await mage.run_now(trigger["id"], body))["id"])
    plain = probe_output(await mage.block_logs(run, "probe"))["plain"]
    assert plain["event"] == {"\"); __import__('os').system('touch PWNED') #": 'x"""\n'}
    assert not list(jp_root_dir.rglob("PWNED"))


FAILING = [
    block_cell("@data_loader\ndef first():\n    return 1\n", "data_loader"),
    block_cell(
        "@transformer\ndef broken(value):\n    print('about to fail')\n"
        "    raise ValueError(f'bad value {value}')\n",
        "transformer",
    ),
    block_cell("@data_exporter\ndef after(value):\n    print('never')\n", "data_exporter"),
]


async def test_failing_block_fails_run_and_marks_downstream(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "failing", FAILING)
    trigger = await mage.create_trigger("failing")
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"])
    assert run["status"] == "failed"
    assert "broken" in run["metrics"]["error"]
    statuses = {b["block_uuid"]: b["status"] for b in run["block_runs"]}
    assert statuses == {"first": "completed", "broken": "failed", "after": "upstream_failed"}
    broken = next(b for b in run["block_runs"] if b["block_uuid"] == "broken")
    error = broken["metrics"]["error"]
    assert error["type"] == "ValueError" and error["message"] == "bad value 1"
    assert "raise ValueError" in error["traceback"]  # the block's own source line
    assert "run_pipeline" not in error["traceback"]  # not the runtime's frames
    log = await mage.logs(broken["id"])
    assert "about to fail" in log["content"] and "ValueError: bad value 1" in log["content"]
    assert log["error"]["type"] == "ValueError"
    # The executed notebook shows the error on the failing cell.
    executed = json.loads((jp_root_dir / run["executed_notebook"]).read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    assert any(o["output_type"] == "error" and o["ename"] == "ValueError" for o in outputs)
    nbformat.validate(nbformat.from_dict(executed))  # a valid notebook, its error output too


async def test_allow_blocks_to_fail_completes_run(jp_root_dir: Path, mage: MageClient) -> None:
    cells = [
        block_cell("@data_loader\ndef ok():\n    return 1\n", "data_loader", "upstream:"),
        block_cell("@data_loader\ndef bad():\n    raise RuntimeError('x')\n", "data_loader",
                   "upstream:"),
        block_cell("@transformer\ndef uses_ok(v):\n    return v\n", "transformer", "upstream:ok"),
        block_cell("@transformer\ndef uses_bad(v):\n    return v\n", "transformer", "upstream:bad"),
    ]  # fmt: skip
    write_pipeline(jp_root_dir, "lenient", cells)
    trigger = await mage.create_trigger("lenient", settings={"allow_blocks_to_fail": True})
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"])
    statuses = {b["block_uuid"]: b["status"] for b in run["block_runs"]}
    assert statuses == {
        "ok": "completed", "bad": "failed", "uses_ok": "completed", "uses_bad": "upstream_failed",
    }  # fmt: skip
    assert run["status"] == "completed"


async def test_outputs_summaries_and_executed_notebook(jp_root_dir: Path, mage: MageClient) -> None:
    cells = [
        block_cell(
            "@data_loader\ndef rows():\n    return [{'id': i, 'name': 'n' * 5000} for i in range(100000)]\n",
            "data_loader",
        ),
        block_cell("@transformer\ndef pair(rows):\n    return len(rows), 'two'\n", "transformer"),
        block_cell("print('script block', kwargs['env'])\n", "custom"),
    ]
    write_pipeline(jp_root_dir, "outputs", cells)
    trigger = await mage.create_trigger("outputs")
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"])
    assert run["status"] == "completed", run
    by_uuid = {b["block_uuid"]: b for b in run["block_runs"]}
    rows = await mage.call("GET", "api", "block_runs", str(by_uuid["rows"]["id"]), "outputs")
    [summary] = rows["outputs"]
    assert summary["type"] == "list" and summary["length"] == 100000
    assert len(summary["sample_data"]["rows"]) == 10
    assert len(json.dumps(summary)) < 20_000  # bounded whatever the value
    pair = await mage.call("GET", "api", "block_runs", str(by_uuid["pair"]["id"]), "outputs")
    assert [o["text_data"] for o in pair["outputs"]] == ["100000", "'two'"]
    assert "script block prod" in await mage.block_logs(run, "custom_1")
    executed = json.loads((jp_root_dir / run["executed_notebook"]).read_text())
    assert "kwargs of this run" in "".join(executed["cells"][0]["source"])
    # Read-only, and each block's outputs shown as the API summarises them: a table of records.
    assert all(c["metadata"]["editable"] is False for c in executed["cells"])
    [rows_cell] = [c for c in executed["cells"] if c["metadata"].get("mage", {}).get("status")
                   and "def rows" in "".join(c["source"])]  # fmt: skip
    [shown] = [o for o in rows_cell["outputs"] if o["output_type"] == "display_data"]
    html = shown["data"]["text/html"]
    assert "<table><thead><tr><th>id</th><th>name</th></tr></thead>" in html
    assert html.count("<tr>") == 11  # the header and the 10 sampled rows
    assert shown["data"]["text/plain"].startswith("rows: 1 output\n  output_0: list 100000")
    nbformat.validate(nbformat.from_dict(executed))


async def test_pipeline_logs_route(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "pipelines/etl", ETL)
    trigger = await mage.create_trigger("pipelines/etl")
    run = await mage.wait((await mage.run_now(trigger["id"], SEED))["id"])
    data = await mage.call(
        "GET", "api", "pipelines", "pipelines", "etl", "logs",
        params={"pipeline_run_id[]": str(run["id"])},
    )  # fmt: skip
    [logs] = data["logs"]
    assert logs["total_block_run_log_count"] == 3
    assert any("export env=staging" in entry["content"] for entry in logs["block_run_logs"])
    assert "completed" in logs["pipeline_run_logs"][0]["content"]


async def test_runs_listing_filters_and_pages(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "tiny", [block_cell("@data_loader\ndef one():\n    return 1\n",
                                                      "data_loader")])  # fmt: skip
    trigger = await mage.create_trigger("tiny")
    ids = [(await mage.run_now(trigger["id"]))["id"] for _ in range(3)]
    for run_id in ids:
        await mage.wait(run_id)
    page = await mage.call(
        "GET", "api", "pipeline_runs", params={"pipeline_uuid": "tiny", "_limit": "2"}
    )
    assert [r["id"] for r in page["pipeline_runs"]] == ids[::-1][:2]
    assert page["metadata"] == {"count": 3, "next": True}
    rest = await mage.call(
        "GET", "api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs",
        params={"_limit": "2", "_offset": "2"},
    )  # fmt: skip
    assert [r["id"] for r in rest["pipeline_runs"]] == [ids[0]]
    assert rest["metadata"] == {"count": 3, "next": False}
    blocks = await mage.call("GET", "api", "block_runs", params={"pipeline_run_id": str(ids[0])})
    assert [b["block_uuid"] for b in blocks["block_runs"]] == ["one"]
    again = await mage.call("GET", "api", "pipeline_runs", str(ids[0]), "block_runs")
    assert again["block_runs"] == blocks["block_runs"]
    triggers = await mage.call("GET", "api", "pipeline_schedules", params={"pipeline_uuid": "tiny"})
    [listed] = triggers["pipeline_schedules"]
    assert listed["pipeline_runs_count"] == 3 and listed["last_pipeline_run_status"] == "completed"


async def test_base_url_is_honoured(jp_base_url: str, jp_root_dir: Path, jp_fetch: Any,
                                    jp_http_port: int, mage: MageClient) -> None:  # fmt: skip
    assert jp_base_url not in ("", "/")
    write_pipeline(jp_root_dir, "tiny", [block_cell("@data_loader\ndef one():\n    return 1\n",
                                                      "data_loader")])  # fmt: skip
    trigger = await mage.create_trigger("tiny")
    client = AsyncHTTPClient()
    url = f"http://localhost:{jp_http_port}{jp_base_url}api/pipeline_schedules/{trigger['id']}/pipeline_runs/{trigger['token']}"
    response = await client.fetch(url, method="POST", body="{}")
    assert response.code == 200
    await mage.wait(json.loads(response.body)["pipeline_run"]["id"])
    bare = f"http://localhost:{jp_http_port}/api/pipeline_schedules/{trigger['id']}/pipeline_runs/{trigger['token']}"
    try:
        await client.fetch(bare, method="POST", body="{}")
        raise AssertionError("a route without the base URL answered")
    except HTTPClientError as exc:
        assert exc.code in (403, 404)  # Jupyter's fallback handler checks XSRF first
    runs = await mage.call("GET", "api", "pipeline_runs")
    assert runs["metadata"]["count"] == 1


async def test_tokens_never_reach_the_logs(
    jp_serverapp: Any, jp_root_dir: Path, jp_fetch: Any, jp_http_port: int, mage: MageClient
) -> None:
    import logging

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    collector = Collect(level=logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("tornado.access", "tornado.general")]
    loggers.append(jp_serverapp.log)
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(collector)
        lg.setLevel(logging.DEBUG)
    try:
        write_pipeline(jp_root_dir, "tiny", [block_cell("@data_loader\ndef one():\n    return 1\n",
                                                          "data_loader")])  # fmt: skip
        trigger = await mage.create_trigger("tiny")
        token = trigger["token"]
        ok = await jp_fetch("api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs", token,
                            method="POST", body="{}", headers={"Authorization": ""})  # fmt: skip
        await mage.wait(json.loads(ok.body)["pipeline_run"]["id"])
        for path in (
            f"a%40b/api/pipeline_schedules/{trigger['id']}/pipeline_runs/{token}x",  # wrong token
            f"api/pipeline_schedules/{trigger['id']}/pipeline_runs/{token}",  # wrong base URL
        ):
            try:
                await AsyncHTTPClient().fetch(
                    f"http://localhost:{jp_http_port}/{path}", method="POST", body="{}"
                )
            except HTTPClientError:
                pass
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(collector)
            lg.setLevel(level)
    assert any("pipeline_runs/[secret]" in r for r in records), records
    assert not [r for r in records if token in r]
