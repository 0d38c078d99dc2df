"""Fast unit tier: the rules that decide a run's outcome, and the run-time's bounds.

No server, no kernel: the pieces are plain functions and objects. The fault tests in
``test_fault_*.py`` prove the same through real servers and kernels.
"""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_mage import runtime
from jupyter_mage.engine import KernelReport
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
