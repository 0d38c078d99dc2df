"""Fast unit tier: the rules that decide a run's outcome, and the run-time's bounds.

No server, no kernel: the pieces are plain functions and objects. The fault tests in
``test_fault_*.py`` prove the same through real servers and kernels.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from jupyter_mage import runtime
from jupyter_mage.run_messages import BlockLogs, BlockState, KernelReport, RunMessages
from jupyter_mage.runtime import Reporter, bounded_repr, cut_text, summarize


def test_a_complete_report_has_no_problem() -> None:
    report = KernelReport(events=5, sent=5, ending="finished", reply={"status": "ok"})
    assert report.problem() is None and report.lost == 0


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        (KernelReport(events=3, sent=5, ending="finished"), "2 of 5 messages from the kernel"),
        (
            KernelReport(events=2, reply={"status": "error", "ename": "OSError", "evalue": "x"}),
            "the kernel failed the run's request: OSError: x",
        ),
        (KernelReport(events=2, reply={"status": "ok"}), "before every block reported its end"),
        (KernelReport(events=4, sent=4, ending="interrupted"), "interrupted (KeyboardInterrupt)"),
        (
            KernelReport(
                events=4,
                sent=4,
                ending="runtime_error",
                runtime_error={"type": "KeyError", "message": "'shape'"},
            ),
            "run-time failed in the kernel: KeyError: 'shape'",
        ),
    ],
)
def test_every_incomplete_report_says_why(report: KernelReport, problem: str) -> None:
    reason = report.problem()
    assert reason is not None and problem in reason


def test_bounded_repr_never_builds_a_big_repr() -> None:
    class Loud(dict[str, Any]):
        def __repr__(self) -> str:
            raise AssertionError("the full repr of a big value was built")

    big = Loud(data=b"x" * 10_000_000, items=list(range(10**6)))
    text = bounded_repr(big)
    assert len(text) <= 2001 and text.startswith("{'data': b'xxx")
    assert bounded_repr("s" * 10**7, 50) == repr("s" * 49)[:50] + "…"
    assert bounded_repr({1: [2, (3, {4})]}) == "{1: [2, (3, {...})]}"
    assert bounded_repr((1,)) == "(1,)" and bounded_repr(set()) == "set()"


def test_summaries_survive_values_that_raise() -> None:
    class AttrDict(dict[str, Any]):
        __getattr__ = dict.__getitem__  # type: ignore[assignment]

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert summarize(AttrDict(a=1))["text_data"] == "{'a': 1}"
    assert summarize(Broken())["text_data"] == "<unrepresentable Broken: RuntimeError>"


def test_cut_text_keeps_head_and_tail() -> None:
    text = "a" * 100 + "b" * 100
    cut = cut_text(text, 20)
    assert cut.startswith("a" * 10) and cut.endswith("b" * 10) and "180 characters cut" in cut


def test_the_reporter_bounds_a_block_and_numbers_every_event(monkeypatch: Any) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(runtime, "_publish", sent.append)
    reporter = Reporter(log_limit=10)
    reporter.start_block("a")
    reporter.write("stdout", "12345")
    reporter.write("stderr", "67890abcdef")
    assert reporter.end_block() == 6
    reporter.write("stdout", "between")  # no block: the next block's log
    reporter.start_block("b")
    reporter.end_block()
    reporter.emit("run_finished")
    assert [e["seq"] for e in sent] == list(range(1, len(sent) + 1))
    outputs = [(e["block"], e["parts"]) for e in sent if e["event"] == "output"]
    assert outputs == [
        ("a", [["stdout", "12345"], ["stderr", "67890"]]),
        ("b", [["stdout", "between"]]),
    ]
    assert sent[-1] == {"event": "run_finished", "seq": len(sent)}


def _event(seq: int, kind: str, **data: Any) -> dict[str, Any]:
    content = {"data": {runtime.EVENT_MIME: {"event": kind, "seq": seq, **data}}}
    return {"msg_type": "display_data", "content": content}


def _stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"msg_type": "stream", "content": {"name": name, "text": text}}


async def test_messages_reach_their_block_and_are_counted() -> None:
    states = {"a": BlockState(1, "initial"), "b": BlockState(2, "initial")}
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    logs = BlockLogs(log_chars=100, cell_output_bytes=1000, error_chars=100)
    messages = RunMessages(7, logs, states, events, logging.getLogger("test"))
    for msg in [
        _event(1, "block_started", block="a"),
        _event(2, "output", block="a", parts=[["stdout", "one\n"], ["stderr", "two\n"]]),
        _stream("from a descriptor\n"),
        _event(3, "block_finished", block="a", status="completed"),
        _stream("nobody's\n"),  # between blocks: no block's log
        _event(4, "block_started", block="b"),
        {"msg_type": "display_data", "content": {"data": {"text/plain": "table"}, "metadata": {}}},
        _event(5, "block_finished", block="b", status="completed"),
        _event(6, "run_finished", ending="finished", error=None, log=""),
        {"msg_type": "display_data", "content": {"data": {runtime.EVENT_MIME: "junk"}}},
    ]:
        messages(msg)
    assert messages.finished.is_set()
    assert messages.report.events == 6 and messages.report.problem() is None
    assert "".join(states["a"].log) == "one\ntwo\nfrom a descriptor\n"
    assert "".join(states["b"].log) == "table\n"
    kinds = []
    while not events.empty():
        item = events.get_nowait()
        assert item is not None
        kinds.append(item["event"])
    expected = ["block_started", "output", "block_finished", "block_started", "block_finished"]
    assert kinds == [*expected, "run_finished"]


async def test_a_lost_event_is_noticed() -> None:
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    logs = BlockLogs(log_chars=100, cell_output_bytes=1000, error_chars=100)
    messages = RunMessages(7, logs, {"a": BlockState(1, "initial")}, events, logging.getLogger("t"))
    messages(_event(1, "block_started", block="a"))
    messages(_event(3, "run_finished", ending="finished", error=None, log=""))  # 2 was dropped
    assert messages.report.problem() == "1 of 3 messages from the kernel were lost"
