"""Blocks as Mage writes them, in triggered runs (contract sections 1 to 3).

Decorators and call convention, Mage's arity errors, fan-in order, tests, sensors, conditionals,
callbacks, ``context`` and ``logger``. Every run here is a real run in a real kernel.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

from nbformat.v4 import new_notebook

import jupyter_mage
from jupyter_mage.pipeline import parse_notebook

from .conftest import MageClient, block_cell, write_pipeline


async def _run(mage: MageClient, uuid: str, body: Any = None, **trigger: Any) -> dict[str, Any]:
    created = await mage.create_trigger(uuid, **trigger)
    return await mage.wait((await mage.run_now(created["id"], body))["id"])


def _statuses(run: dict[str, Any]) -> dict[str, str]:
    return {b["block_uuid"]: b["status"] for b in run["block_runs"]}


def _error(run: dict[str, Any], block: str) -> dict[str, Any]:
    found = next(b for b in run["block_runs"] if b["block_uuid"] == block)
    return found["metrics"]["error"]  # type: ignore[no-any-return]


# -- Mage's templates, decorators, call convention ----------------------------------------------

MAGE_LOADER = """\
if 'data_loader' not in globals():
    from mage_ai.data_preparation.decorators import data_loader
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@data_loader
def load_data(*args, **kwargs):
    \"\"\"
    Template code for loading data from any source.

    Returns:
        Anything (e.g. data frame, dictionary, array, int, str, etc.)
    \"\"\"
    # Specify your data loading logic here

    return {'rows': [1, 2, 3], 'env': kwargs['env']}


@test
def test_output(output, *args) -> None:
    \"\"\"
    Template code for testing the output of the block.
    \"\"\"
    assert output is not None, 'The output is undefined'
"""

MAGE_TRANSFORMER = """\
if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@transformer
def transform(data, *args, **kwargs):
    return sum(data['rows']) * kwargs['factor']


@test
def test_output(output, *args) -> None:
    assert output is not None, 'The output is undefined'
"""

MAGE_EXPORTER = """\
if 'data_exporter' not in globals():
    from mage_ai.data_preparation.decorators import data_exporter


@data_exporter
def export_data(data, *args, **kwargs):
    print(f'exported {data}')
"""


async def test_mage_template_blocks_run_unchanged(jp_root_dir: Path, mage: MageClient) -> None:
    assert importlib.util.find_spec("mage_ai") is None  # the guarded imports must not run
    write_pipeline(
        jp_root_dir,
        "mage_templates",
        [
            block_cell(MAGE_LOADER, "data_loader"),
            block_cell(MAGE_TRANSFORMER, "transformer"),
            block_cell(MAGE_EXPORTER, "data_exporter"),
        ],
        variables={"factor": 10},
    )
    run = await _run(mage, "mage_templates")
    assert run["status"] == "completed", run
    assert _statuses(run) == {
        "load_data": "completed", "transform": "completed", "export_data": "completed",
    }  # fmt: skip
    assert "exported 60" in await mage.block_logs(run, "export_data")
    assert "1/1 tests passed." in await mage.block_logs(run, "load_data")


def test_decorators_importable_from_the_package() -> None:
    names = [
        "data_loader", "transformer", "data_exporter", "custom", "sensor", "test",
        "condition", "callback", "on_success", "on_failure",
    ]  # fmt: skip
    for name in names:
        assert callable(getattr(jupyter_mage, name)), name
        assert name in jupyter_mage.__all__

    # Outside IPython they only mark functions.
    @jupyter_mage.callback("failure")
    def alert(parent_block_data: Any, **kwargs: Any) -> None:
        return None

    assert alert.__mage_block_type__ == "callback"  # type: ignore[attr-defined]
    assert alert.__mage_callback_on__ == ("failure",)  # type: ignore[attr-defined]


CALLS = [
    block_cell("@data_loader\ndef one():\n    return 1\n", "data_loader", "upstream:"),
    # no **kwargs: no runtime variables are passed
    block_cell("@transformer\ndef plain(x):\n    return x + 1\n", "transformer", "upstream:one"),
    # a tuple is several outputs: downstream gets them as a list
    block_cell(
        "@transformer\ndef pair(x, **kwargs):\n    return x, kwargs['env']\n",
        "transformer",
        "upstream:plain",
    ),
    # a list is one value (Mage would split it)
    block_cell("@data_loader\ndef listed():\n    return [7]\n", "data_loader", "upstream:"),
    block_cell(
        "@data_exporter\ndef show(p, items, *args):\n"
        "    print('PAIR', p, 'ITEMS', items, 'EXTRA', args)\n",
        "data_exporter",
        "upstream:pair",
        "upstream:listed",
    ),
    # a script block: kwargs in scope, no output
    block_cell("print('SCRIPT', kwargs['block_uuid'], kwargs['env'])\n", "custom", "upstream:"),
]


async def test_call_convention_outputs_and_script_blocks(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "calls", CALLS)
    run = await _run(mage, "calls", {"pipeline_run": {"variables": {"env": "qa"}}})
    assert run["status"] == "completed", run
    assert "PAIR [2, 'qa'] ITEMS [7] EXTRA ()" in await mage.block_logs(run, "show")
    assert "SCRIPT custom_1 qa" in await mage.block_logs(run, "custom_1")
    custom = next(b for b in run["block_runs"] if b["block_uuid"] == "custom_1")
    outputs = await mage.call("GET", "api", "block_runs", str(custom["id"]), "outputs")
    assert outputs["outputs"] == []


ARITY = [
    block_cell("@data_loader\ndef a():\n    return 1\n", "data_loader", "upstream:"),
    block_cell("@data_loader\ndef b():\n    return 2\n", "data_loader", "upstream:"),
    block_cell("@transformer\ndef needs_two(x, y, **kwargs):\n    return x\n", "transformer",
               "upstream:a"),
    block_cell("@transformer\ndef takes_one(x):\n    return x\n", "transformer",
               "upstream:a", "upstream:b"),
    block_cell("@data_loader\ndef root_with_arg(x):\n    return x\n", "data_loader", "upstream:"),
    block_cell("@transformer\ndef defaults_ok(x, y=5):\n    return x + y\n", "transformer",
               "upstream:a"),
]  # fmt: skip


async def test_mage_arity_errors_name_the_block(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "arity", ARITY)
    run = await _run(mage, "arity", settings={"allow_blocks_to_fail": True})
    assert _statuses(run) == {
        "a": "completed", "b": "completed", "needs_two": "failed", "takes_one": "failed",
        "root_with_arg": "failed", "defaults_ok": "completed",
    }  # fmt: skip
    error = _error(run, "needs_two")
    assert error["type"] == "ArityError"
    assert error["message"] == (
        "Block needs_two may be missing upstream dependencies. It expected to have 2 arguments, "
        "but only received 1. Confirm that the @transformer method declaration has the correct "
        "number of arguments."
    )
    assert error["message"] in await mage.block_logs(run, "needs_two")
    assert "run_pipeline" not in error["traceback"]
    assert _error(run, "takes_one")["message"].startswith(
        "Block takes_one has too many upstream dependencies. It expected to have 1 arguments, "
        "but received 2."
    )
    assert _error(run, "root_with_arg")["message"].startswith(
        "Block root_with_arg may be missing upstream dependencies. It expected to have 1 "
        "arguments, but only received 0. Confirm that the @data_loader method"
    )


# -- DAGs -----------------------------------------------------------------------------------

FAN = [
    block_cell("@data_loader\ndef first():\n    return 'first'\n", "data_loader", "upstream:"),
    block_cell("@data_loader\ndef second():\n    return 'second'\n", "data_loader", "upstream:"),
    # fan-in: argument order is the upstream tags' order, not the notebook's
    block_cell(
        "@transformer\ndef join(x, y, **kwargs):\n    return f'{x}+{y}'\n",
        "transformer",
        "upstream:second",
        "upstream:first",
    ),
    # fan-out: two blocks downstream of join
    block_cell("@data_exporter\ndef left(v):\n    print('LEFT', v)\n", "data_exporter",
               "upstream:join"),
    block_cell("@data_exporter\ndef right(v):\n    print('RIGHT', v)\n", "data_exporter",
               "upstream:join"),
]  # fmt: skip


async def test_fan_in_gets_outputs_in_upstream_order(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "fan", FAN)
    run = await _run(mage, "fan")
    assert run["status"] == "completed", run
    assert "LEFT second+first" in await mage.block_logs(run, "left")
    assert "RIGHT second+first" in await mage.block_logs(run, "right")
    pipeline = (await mage.call("GET", "api", "pipelines", "fan"))["pipeline"]
    join = next(b for b in pipeline["blocks"] if b["uuid"] == "join")
    assert join["upstream_blocks"] == ["second", "first"]
    assert join["downstream_blocks"] == ["left", "right"]


# -- tests, sensors, conditionals, callbacks ------------------------------------------------

FAILING_TEST = [
    block_cell(
        "@data_loader\ndef numbers():\n    return [1, -2]\n\n"
        "@test\ndef test_output(output, *args):\n    assert output\n\n"
        "@test\ndef test_positive(output, *args):\n"
        "    assert all(n > 0 for n in output), 'negative numbers'\n",
        "data_loader",
    ),
    block_cell("@transformer\ndef double(xs):\n    return [2 * x for x in xs]\n", "transformer"),
    block_cell("@data_exporter\ndef save(xs):\n    print(xs)\n", "data_exporter"),
]


async def test_failed_test_fails_block_and_downstream(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "failing_test", FAILING_TEST)
    run = await _run(mage, "failing_test")
    assert run["status"] == "failed"
    assert _statuses(run) == {
        "numbers": "failed", "double": "upstream_failed", "save": "upstream_failed",
    }  # fmt: skip
    error = _error(run, "numbers")
    assert error["type"] == "AssertionError"
    assert error["message"] == "test_positive failed: negative numbers (block: numbers)"
    assert "assert all(n > 0" in error["traceback"]  # the test's own line
    logs = await mage.block_logs(run, "numbers")
    assert "FAIL: test_positive (block: numbers)" in logs and "1/2 tests passed." in logs


SENSORS = [
    block_cell(
        "@sensor\ndef ready(*args, **kwargs):\n"
        "    print('poll', kwargs['retry']['attempts'], flush=True)\n"
        "    return kwargs['retry']['attempts'] >= 3\n",
        "sensor",
        "upstream:",
    ),
    block_cell("@transformer\ndef after_ready(x):\n    return 'ran'\n", "transformer",
               "upstream:ready"),
    block_cell("@sensor\ndef never(**kwargs):\n    return False\n", "sensor", "upstream:",
               "sensor_timeout:0.5"),
    block_cell("@transformer\ndef after_never(x):\n    return 'ran'\n", "transformer",
               "upstream:never"),
]  # fmt: skip


async def test_sensors_poll_until_true_or_time_out(jp_root_dir: Path, mage: MageClient) -> None:
    path = write_pipeline(jp_root_dir, "sensors", SENSORS)
    # The pipeline's poll interval is notebook metadata; a cell tag overrides it per sensor.
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata["mage"] = {"sensor_interval": 0.05}
    nbformat.write(nb, path)
    run = await _run(mage, "sensors", settings={"allow_blocks_to_fail": True})
    assert _statuses(run) == {
        "ready": "completed", "after_ready": "completed",
        "never": "failed", "after_never": "upstream_failed",
    }  # fmt: skip
    logs = await mage.block_logs(run, "ready")
    assert re.findall(r"^poll (\d)", logs, re.MULTILINE) == ["1", "2", "3"]
    assert "Sensor ready sleeping for 0.05 seconds..." in logs
    error = _error(run, "never")
    assert error["type"] == "SensorTimeout"
    assert error["message"].startswith("Sensor never did not return True within 0.5 seconds")
    assert run["status"] == "completed"  # allow_blocks_to_fail


CONDITIONAL = [
    block_cell("@data_loader\ndef orders():\n    return [5, 50]\n", "data_loader", "upstream:"),
    block_cell(
        "@transformer\ndef big(orders, **kwargs):\n    return [o for o in orders if o > 10]\n",
        "transformer",
        "upstream:orders",
    ),
    block_cell(
        "if 'condition' not in globals():\n"
        "    from mage_ai.data_preparation.decorators import condition\n\n"
        "@condition\ndef only_in_prod(orders, *args, **kwargs) -> bool:\n"
        "    print('checking', orders, kwargs['parent_block_uuid'])\n"
        "    return kwargs['env'] == 'prod'\n",
        "conditional",
        "upstream:big",
    ),
    block_cell("@data_exporter\ndef save_big(rows):\n    print('saved', rows)\n",
               "data_exporter", "upstream:big"),
    block_cell("@transformer\ndef after_save(x):\n    return x\n", "transformer",
               "upstream:save_big"),
    block_cell("@data_exporter\ndef other(orders):\n    print('other', orders)\n",
               "data_exporter", "upstream:orders"),
    block_cell(
        "@condition\ndef broken(*args):\n    raise RuntimeError('boom')\n",
        "conditional", "upstream:other", "name:guard",
    ),
]  # fmt: skip


async def test_false_condition_skips_block_and_downstream(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "conditional", CONDITIONAL)
    pipeline = (await mage.call("GET", "api", "pipelines", "conditional"))["pipeline"]
    assert [c["uuid"] for c in pipeline["conditionals"]] == ["only_in_prod", "guard"]
    big = next(b for b in pipeline["blocks"] if b["uuid"] == "big")
    assert big["conditional_blocks"] == ["only_in_prod"]
    # Add-on blocks have no block run of their own.
    assert {b["uuid"] for b in pipeline["blocks"]} == {
        "orders", "big", "save_big", "after_save", "other",
    }  # fmt: skip

    run = await _run(mage, "conditional", {"pipeline_run": {"variables": {"env": "dev"}}})
    assert run["status"] == "completed", run
    assert _statuses(run) == {
        "orders": "completed", "big": "condition_failed", "save_big": "condition_failed",
        "after_save": "condition_failed", "other": "condition_failed",
    }  # fmt: skip
    logs = await mage.block_logs(run, "big")
    assert "checking [5, 50] big" in logs  # the condition got the parent's inputs and kwargs
    assert "Condition only_in_prod.only_in_prod of block big is False" in logs
    other = await mage.block_logs(run, "other")
    assert "RuntimeError: boom" in other and "counts as False" in other

    run = await _run(mage, "conditional", {"pipeline_run": {"variables": {"env": "prod"}}})
    assert _statuses(run)["save_big"] == "completed"
    assert "saved [50]" in await mage.block_logs(run, "save_big")
    assert "checking [5, 50] big" in await mage.block_logs(run, "big")


CALLBACKS = [
    block_cell("@data_loader\ndef fine(**kwargs):\n    return 41\n", "data_loader", "upstream:"),
    block_cell("@data_loader\ndef fails(**kwargs):\n    raise ValueError('bad input')\n",
               "data_loader", "upstream:"),
    block_cell(
        "if 'callback' not in globals():\n"
        "    from mage_ai.data_preparation.decorators import callback\n\n"
        "@callback('success')\ndef on_ok(parent_block_data, **kwargs):\n"
        "    print('SUCCESS', kwargs['parent_block_uuid'], parent_block_data)\n\n"
        "@callback('failure')\ndef on_error(parent_block_data, **kwargs):\n"
        "    print('FAILURE', kwargs['parent_block_uuid'], repr(kwargs['__error']))\n"
        "    kwargs['context']['alerted'] = kwargs['parent_block_uuid']\n\n"
        "@callback('success')\ndef broken_callback(*args):\n    raise KeyError('oops')\n",
        "callback", "upstream:fine", "upstream:fails", "name:notify",
    ),
    block_cell(
        "@transformer\ndef uses_fine(x, **kwargs):\n"
        "    print('context', kwargs['context'])\n    return x + 1\n",
        "transformer",
        "upstream:fine",
    ),
]  # fmt: skip


async def test_callbacks_run_on_success_and_failure(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "callbacks", CALLBACKS)
    run = await _run(mage, "callbacks", settings={"allow_blocks_to_fail": True})
    assert _statuses(run) == {"fine": "completed", "fails": "failed", "uses_fine": "completed"}
    fine = await mage.block_logs(run, "fine")
    assert "SUCCESS fine 41" in fine
    # An error in a callback is logged, never fatal.
    assert "Callback notify.broken_callback of block fine (success) failed" in fine
    assert "KeyError: 'oops'" in fine
    fails = await mage.block_logs(run, "fails")
    assert "FAILURE fails ValueError('bad input')" in fails
    assert "context {'alerted': 'fails'}" in await mage.block_logs(run, "uses_fine")


# -- context and logger -----------------------------------------------------------------------

CONTEXT = [
    block_cell(
        "@data_loader\ndef writer(**kwargs):\n    kwargs['context']['seen'] = ['writer']\n"
        "    kwargs['logger'].warning('wrote %d key', len(kwargs['context']))\n    return 1\n",
        "data_loader",
    ),
    block_cell(
        "@transformer\ndef reader(x, **kwargs):\n    kwargs['context']['seen'].append('reader')\n"
        "    kwargs['logger'].info('context is %s', kwargs['context'])\n    return x\n",
        "transformer",
    ),
]


async def test_context_is_shared_and_logger_records_land_in_block_log(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "context", CONTEXT)
    run = await _run(mage, "context")
    assert run["status"] == "completed"
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.search(
        rf"^{stamp} WARNING wrote 1 key$", await mage.block_logs(run, "writer"), re.MULTILINE
    )
    reader = await mage.block_logs(run, "reader")
    assert re.search(
        rf"^{stamp} INFO context is {{'seen': \['writer', 'reader'\]}}$", reader, re.MULTILINE
    )


# -- parsing add-on blocks (no kernel) ---------------------------------------------------------


def _parse(*cells: Any, mage_meta: Any = None) -> Any:
    nb = new_notebook()
    nb.cells = list(cells)
    if mage_meta is not None:
        nb.metadata["mage"] = mage_meta
    return parse_notebook("p", "p.ipynb", nb)


def test_addons_attach_to_parents_and_are_validated() -> None:
    pipeline = _parse(
        block_cell("@data_loader\ndef load():\n    return 1\n", "data_loader"),
        block_cell("@condition\ndef ok(*a):\n    return True\n", "conditional"),
        block_cell("@transformer\ndef t(x):\n    return x\n", "transformer"),
        block_cell("@callback('failure')\ndef cb(*a):\n    pass\n", "callback", "upstream:load",
                   "upstream:t"),
        block_cell("@sensor\ndef s():\n    return True\n", "sensor", "sensor_interval:2"),
        mage_meta={"sensor_interval": 0.5, "sensor_timeout": 30},
    )  # fmt: skip
    assert pipeline.is_valid, pipeline.errors
    assert [b.uuid for b in pipeline.blocks] == ["load", "t", "s"]
    # The default chain skips add-ons: t follows load.
    assert pipeline.blocks[1].upstream_blocks == ["load"]
    load = pipeline.blocks[0]
    assert load.conditional_blocks == ["ok"] and load.callback_blocks == ["cb"]
    plan = pipeline.block_plan(pipeline.blocks[1])
    assert [c["uuid"] for c in plan["callbacks"]] == ["cb"] and plan["conditionals"] == []
    assert pipeline.block_plan(pipeline.blocks[2])["sensor"] == {"interval": 2.0, "timeout": 30.0}

    bad = _parse(
        block_cell("@condition\ndef orphan(*a):\n    return True\n", "conditional"),
        block_cell("@data_loader\ndef load():\n    return 1\n", "data_loader"),
        block_cell("@callback\ndef cb(*a):\n    pass\n", "callback", "upstream:nope"),
        block_cell("@sensor\ndef s():\n    return True\n", "sensor", "sensor_timeout:soon"),
        mage_meta={"sensor_interval": -1},
    )
    messages = [e["message"] for e in bad.errors]
    assert "conditional block 'orphan' has no parent block" in messages
    assert "callback block 'cb' watches unknown block 'nope'" in messages
    assert "tag sensor_timeout:soon must be a positive number" in messages
    assert "metadata.mage.sensor_interval must be a positive number" in messages


# -- the example notebooks --------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "notebooks"
EXAMPLE_PIPELINES = ("etl_demo", "revenue_by_segment", "mage_style")


def copy_examples(root: Path) -> None:
    """The example pipelines and their data, laid out as in the repository."""
    for folder in ("pipelines", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in EXAMPLE_PIPELINES:
        shutil.copy(EXAMPLES / "pipelines" / f"{name}.ipynb", root / "pipelines")
    for data in (EXAMPLES / "data").glob("*.csv"):
        shutil.copy(data, root / "data")


async def test_examples_run_green_through_the_api(jp_root_dir: Path, mage: MageClient) -> None:
    copy_examples(jp_root_dir)
    for name in EXAMPLE_PIPELINES:
        trigger = await mage.create_trigger(f"pipelines/{name}", schedule_type="api")
        answer = await mage.call(
            "POST",
            "api",
            "pipeline_schedules",
            str(trigger["id"]),
            "pipeline_runs",
            trigger["token"],
            body={"pipeline_run": {"variables": {"env": "staging"}}},
        )
        run = await mage.wait(answer["pipeline_run"]["id"])
        assert run["status"] == "completed", (name, run)
        assert set(_statuses(run).values()) == {"completed"}, (name, _statuses(run))

    output = jp_root_dir / "pipelines/output/staging"
    revenue = json.loads(next(output.glob("revenue_by_segment_*.json")).read_text())
    assert [row["segment"] for row in revenue] == ["enterprise", "smb", "startup"]
    assert len(json.loads((output / "daily_totals.json").read_text())) == 27

    # The conditional: export_enabled=false skips the exporter, the run still completes.
    skip = {"pipeline_run": {"variables": {"export_enabled": False}}}
    run = await _run(mage, "pipelines/revenue_by_segment", skip)
    assert run["status"] == "completed"
    assert _statuses(run) == {
        "load_orders": "completed", "load_customers": "completed",
        "revenue_by_segment": "completed", "export_segments": "condition_failed",
    }  # fmt: skip
    run = await _run(mage, "pipelines/mage_style")
    assert "daily_totals: 27 days" in await mage.block_logs(run, "daily_totals")  # the callback
