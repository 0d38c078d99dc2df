"""Speed at scale: the "Speed at scale" rows of ``run.py`` (``--only scale`` runs just these).

Five measurements on servers with default MageApp settings, each against a target:

1. cadence: the 3-block bench pipeline triggered every 50 ms (``?wait``, one connection per
   POST), latency p50/p90/max against 3x the floor (d)'s median;
2. isolated runs/s: one-block runs from 16 ``?wait`` clients on a fresh server, and the CPU of
   the server's whole process tree per run;
3. a 500-block chain: blocks/s and the server process's own CPU per block;
4. 100 MB of bytes passed from one block to the next, against the same two bodies run in one
   execute request on the floor's kernel;
5. the list pages (runs, a trigger's runs, triggers) of a database holding 50,000 runs.

``run.py`` runs as ``__main__``: importing it here by name would load a second copy of it, with
classes of its own. What this module needs of it comes in through :class:`Kit` instead, and its
types are imported for the type checker only.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
from processes import descendants, proc_stat

if TYPE_CHECKING:
    from run import Bench, Connection, Floor, Server, Trigger

# -- the pipelines ----------------------------------------------------------------------------

ONE_BLOCK = "one_block"
CHAIN = "chain500"
CHAIN_LENGTH = 500
BYTES = "bytes100"
BYTES_SIZE = 100 << 20

ONE_BLOCK_SOURCE = '''\
if 'data_loader' not in globals():
    from mage_ai.data_preparation.decorators import data_loader


@data_loader
def load_small(*args, **kwargs):
    """A small dict."""
    return {"ok": True, "n": 1}
'''

CHAIN_FIRST = """\
if 'data_loader' not in globals():
    from mage_ai.data_preparation.decorators import data_loader


@data_loader
def step_000(*args, **kwargs):
    return 0
"""

CHAIN_NEXT = """\
if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer


@transformer
def step_{n:03d}(x, *args, **kwargs):
    return x + 1
"""

BYTES_LOADER = """\
if 'data_loader' not in globals():
    from mage_ai.data_preparation.decorators import data_loader


@data_loader
def load_bytes(*args, **kwargs):
    return b"x" * (100 << 20)
"""

BYTES_TRANSFORMER = """\
if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer


@transformer
def count_bytes(data, *args, **kwargs):
    return len(data)
"""

#: The two bodies of :data:`BYTES` in one execute request, as the floor (d) runs its blocks.
BYTES_FLOOR_CODE = f"""\
def data_loader(f): return f
def transformer(f): return f
{BYTES_LOADER}
{BYTES_TRANSFORMER}
_out = count_bytes(load_bytes())
print(_out)
del _out
"""


def write_notebooks(root: Path, notebook: Callable[[list[Any]], Any]) -> None:
    """The scale rows' pipelines, next to ``bench.ipynb`` (block-tagged cells; upstream links
    by order: each block takes the output of the block cell above it)."""

    def cells(blocks: Sequence[tuple[str, str]]) -> list[Any]:
        return [nbformat.v4.new_code_cell(src, metadata={"tags": [tag]}) for tag, src in blocks]

    chain = [("data_loader", CHAIN_FIRST)] + [
        ("transformer", CHAIN_NEXT.format(n=n)) for n in range(1, CHAIN_LENGTH)
    ]
    pipelines = {
        ONE_BLOCK: [("data_loader", ONE_BLOCK_SOURCE)],
        CHAIN: chain,
        BYTES: [("data_loader", BYTES_LOADER), ("transformer", BYTES_TRANSFORMER)],
    }
    for uuid, blocks in pipelines.items():
        nbformat.write(notebook(cells(blocks)), root / f"{uuid}.ipynb")


# -- what run.py lends ------------------------------------------------------------------------


@dataclass
class Kit:
    """The pieces of ``run.py`` these rows reuse (see the module docstring for why)."""

    connection: type[Connection]
    trigger: type[Trigger]
    floor: type[Floor]
    settle: Callable[[Sequence[int]], Awaitable[bool]]
    percentile: Callable[[Sequence[float], float], float]
    notebook: Callable[[list[Any]], Any]
    say: Callable[[str], None]
    clk_tck: int


@dataclass
class Counts:
    """How many samples each row takes (``--quick`` takes fewer)."""

    cadence_runs: int
    cadence_interval: float
    isolated_runs: int
    isolated_clients: int
    repeats: int  # the chain and bytes rows, and the floor's bytes samples
    list_runs: int
    list_samples: int
    list_warmup: int = 2

    @classmethod
    def of(cls, quick: bool) -> Counts:
        return cls(
            cadence_runs=40 if quick else 100,
            cadence_interval=0.05,
            isolated_runs=60 if quick else 200,
            isolated_clients=16,
            repeats=1 if quick else 3,
            list_runs=50_000,
            list_samples=7 if quick else 20,
        )


@dataclass
class ScaleRow:
    """One line of the "Speed at scale" table."""

    name: str
    measured: str
    target: str
    met: bool | None  # None: not judged (a row that failed to measure)
    how: str = ""


@dataclass
class Scale:
    """The scale rows, measured in order; :meth:`report` gives the Markdown section."""

    bench: Bench
    kit: Kit
    quick: bool
    counts: Counts = field(init=False)
    rows: list[ScaleRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    floor_median: float = math.nan
    seeded: int = 0
    seed_seconds: float = math.nan

    def __post_init__(self) -> None:
        self.counts = Counts.of(self.quick)

    async def run(self, floor_median: float, floor: Floor | None = None) -> None:
        """Every row; one that fails is reported as failed, the others still run.

        ``floor`` is a running floor kernel (``--only scale``); None starts one (the full run
        has stopped its own by now).
        """
        self.floor_median = floor_median
        write_notebooks(self.bench.root, self.kit.notebook)
        if floor is None:
            floor = self.kit.floor(self.bench.root)
            self.bench.floor = floor  # Bench.close stops it, failures included
            await floor.start()
        main = self.bench.server("scale", None)
        self.kit.say("scale: starting a default server")
        await main.start()
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("cadence", lambda: self.cadence(main)),
            ("isolated runs/s", self.isolated),
            ("500-block chain", lambda: self.chain(main)),
            ("100 MB bytes", lambda: self.bytes_row(main, floor)),
        ]
        for name, step in steps:
            self.kit.say(f"scale: {name}")
            await self.guarded(name, step)
        await main.stop()
        await floor.stop()
        self.kit.say("scale: list pages")
        await self.guarded("list pages", self.list_pages)

    async def guarded(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run one row; an exception becomes a failed row (Ctrl-C still stops everything)."""
        try:
            await step()
        except Exception as exc:
            self.kit.say(f"scale: {name} failed: {exc!r}")
            self.rows.append(ScaleRow(name, f"failed: {str(exc)[:200]!r}", "", False))

    async def quiet(self) -> None:
        await self.kit.settle(self.bench.roots())

    async def trigger(self, server: Server, pipeline: str, name: str) -> Trigger:
        """A new API trigger of ``pipeline`` on ``server``."""
        return self.kit.trigger(server, await server.create_trigger(name, pipeline))

    async def run_once(self, trigger: Trigger) -> tuple[float, dict[str, Any]]:
        """One ``?wait`` POST on a connection of its own: (seconds to the answer, the run)."""
        connection = self.kit.connection(trigger.server.port)
        try:
            t0 = time.perf_counter()
            status, body = await trigger.post(wait=True, connection=connection)
            elapsed = time.perf_counter() - t0
        finally:
            connection.close()
        if status != 200:
            raise RuntimeError(f"trigger answered {status}: {body[:300]!r}")
        return elapsed, dict(json.loads(body)["pipeline_run"])

    # -- 1. cadence ---------------------------------------------------------------------------

    async def cadence(self, server: Server) -> None:
        c, pct = self.counts, self.kit.percentile
        trigger = await self.trigger(server, "bench", "scale cadence")
        await self.run_once(trigger)  # warm: the pipeline parsed, the pool filled
        await self.quiet()
        latencies: list[float] = []
        bad = 0
        start = time.perf_counter()

        async def one(i: int) -> None:
            nonlocal bad
            await asyncio.sleep(max(0.0, start + i * c.cadence_interval - time.perf_counter()))
            try:
                elapsed, run = await self.run_once(trigger)
            except Exception as exc:
                self.kit.say(f"cadence run {i}: {exc!r}")
                bad += 1
                return
            latencies.append(elapsed)
            bad += run["status"] != "completed"

        await asyncio.gather(*(one(i) for i in range(c.cadence_runs)))
        p50, p90 = pct(latencies, 50), pct(latencies, 90)
        worst = max(latencies, default=math.nan)
        limit = 3 * self.floor_median
        self.rows.append(
            ScaleRow(
                "cadence",
                f"p50 {p50 * 1e3:.1f} ms, p90 **{p90 * 1e3:.1f} ms**, max {worst * 1e3:.1f} ms; "
                f"not completed: **{bad}**",
                f"p90 ≤ 3x (d) = {limit * 1e3:.1f} ms; 0 not completed",
                p90 <= limit and bad == 0,
                f"bench pipeline, {c.cadence_runs} POSTs `?wait`, one every "
                f"{c.cadence_interval * 1e3:.0f} ms, each on its own connection",
            )
        )

    # -- 2. isolated runs/s -------------------------------------------------------------------

    async def isolated(self) -> None:
        c = self.counts
        server = self.bench.server("scale-iso", None)
        await server.start()
        try:
            trigger = await self.trigger(server, ONE_BLOCK, "scale isolated")
            await self.quiet()
            ticks0 = tree_cpu_ticks(server.pid)
            left = c.isolated_runs
            answered: list[float] = []
            lost = 0
            t0 = time.perf_counter()

            async def client() -> None:
                nonlocal left, lost
                connection = self.kit.connection(server.port)
                try:
                    while left > 0:
                        left -= 1
                        try:
                            status, body = await trigger.post(wait=True, connection=connection)
                            ok = status == 200 and (
                                json.loads(body)["pipeline_run"]["status"] == "completed"
                            )
                        except Exception as exc:
                            self.kit.say(f"isolated run: {exc!r}")
                            ok = False
                        lost += not ok
                        answered.append(time.perf_counter())
                finally:
                    connection.close()

            await asyncio.gather(*(client() for _ in range(c.isolated_clients)))
            wall = max(answered) - t0
            await self.quiet()  # the finished kernels' shutdown belongs to the runs too
            ticks = tree_cpu_ticks(server.pid) - ticks0
        finally:
            await server.stop()
        rate = c.isolated_runs / wall
        cpu = ticks / self.kit.clk_tck / c.isolated_runs
        self.rows.append(
            ScaleRow(
                "isolated runs/s",
                f"**{rate:.1f} runs/s** ({c.isolated_runs} in {wall:.1f} s); lost **{lost}**; "
                f"CPU {cpu * 1e3:.0f} ms per run (server tree)",
                "≥ 20 runs/s; 0 lost",
                rate >= 20 and lost == 0,
                f"`{ONE_BLOCK}` (1 block), {c.isolated_clients} `?wait` clients in a loop, "
                "fresh server; CPU: server + fork parent + kernels, reaped kernels included, "
                "until the tree is quiet again",
            )
        )

    # -- 3. 500-block chain -------------------------------------------------------------------

    async def chain(self, server: Server) -> None:
        trigger = await self.trigger(server, CHAIN, "scale chain")
        rates: list[float] = []
        cpu: list[float] = []
        last_output = "?"
        for _ in range(self.counts.repeats):
            await self.quiet()
            ticks0 = own_ticks(server.pid)
            elapsed, run = await self.run_once(trigger)
            await self.quiet()
            cpu.append((own_ticks(server.pid) - ticks0) / self.kit.clk_tck / CHAIN_LENGTH)
            if run["status"] != "completed":
                raise RuntimeError(f"chain run {run['id']} ended {run['status']}")
            rates.append(CHAIN_LENGTH / elapsed)
            blocks = (await server.json(f"api/pipeline_runs/{run['id']}/block_runs"))["block_runs"]
            done = sum(1 for b in blocks if b["status"] == "completed")
            if len(blocks) != CHAIN_LENGTH or done != CHAIN_LENGTH:
                raise RuntimeError(f"chain run: {done} of {len(blocks)} block runs completed")
            last = max(blocks, key=lambda b: b["block_uuid"])
            outputs = (await server.json(f"api/block_runs/{last['id']}/outputs"))["outputs"]
            last_output = str(outputs[0].get("text_data")) if outputs else "(none)"
        rate = _median(self.kit.percentile, rates)
        ok = last_output == str(CHAIN_LENGTH - 1)
        self.rows.append(
            ScaleRow(
                "500-block chain",
                f"**{rate:.0f} blocks/s** ({CHAIN_LENGTH / rate:.2f} s per run); server CPU "
                f"{_median(self.kit.percentile, cpu) * 1e3:.2f} ms per block; last block's "
                f"output {last_output!r}",
                f"≥ 2000 blocks/s; completed, last output '{CHAIN_LENGTH - 1}'",
                rate >= 2000 and ok,
                f"`{CHAIN}`: a loader returning 0, then {CHAIN_LENGTH - 1} transformers x+1; "
                f"`?wait`, median of {len(rates)}; CPU: the server process's own ticks",
            )
        )

    # -- 4. 100 MB of bytes -------------------------------------------------------------------

    async def bytes_row(self, server: Server, floor: Floor) -> None:
        trigger = await self.trigger(server, BYTES, "scale bytes")
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(self.counts.repeats):
            await self.quiet()
            elapsed, run = await self.run_once(trigger)
            if run["status"] != "completed":
                raise RuntimeError(f"bytes run {run['id']} ended {run['status']}")
            ours.append(elapsed)
            await self.quiet()
            theirs.append(await floor_execute(floor, BYTES_FLOOR_CODE, str(BYTES_SIZE)))
        mage, own = _median(self.kit.percentile, ours), _median(self.kit.percentile, theirs)
        ratio = mage / own
        self.rows.append(
            ScaleRow(
                "100 MB bytes",
                f"{mage * 1e3:.0f} ms against the blocks' own {own * 1e3:.0f} ms: **{ratio:.2f}x**",
                "≤ 1.5x",
                ratio <= 1.5,
                f"`{BYTES}`: loader `b'x' * (100 << 20)`, transformer `len(data)`; trigger → "
                f"completed against both bodies in ONE execute on the floor's kernel; medians "
                f"of {len(ours)}",
            )
        )

    # -- 5. list pages at 50,000 runs ---------------------------------------------------------

    async def list_pages(self) -> None:
        c, pct = self.counts, self.kit.percentile
        server = self.bench.server("scale-list", None)
        await server.start()  # creates the schema
        triggers = [await self.trigger(server, "bench", f"scale list {k}") for k in range(4)]
        pipeline = (await server.json("api/pipelines/bench"))["pipeline"]
        blocks = [str(b["uuid"]) for b in pipeline["blocks"]]
        await server.stop()
        url = server.db_url or f"sqlite:///{server.workdir / 'bench.sqlite'}"
        budget = 30.0 if self.quick else None
        t0 = time.perf_counter()
        self.seeded = await asyncio.to_thread(
            seed_runs, url, c.list_runs, [t.id for t in triggers], blocks, budget
        )
        self.seed_seconds = time.perf_counter() - t0
        self.kit.say(f"scale: seeded {self.seeded} runs in {self.seed_seconds:.1f} s")
        await server.start()
        try:
            count = (await server.json("api/pipeline_runs", _limit=1))["metadata"]["count"]
            if count != self.seeded:
                self.notes.append(f"the runs list counts {count} runs, {self.seeded} seeded")
            token = f"token={server.token}"
            one = triggers[0].id
            offset = min(40_000, self.seeded - 100)
            pages = [
                ("api/pipeline_runs", "api/pipeline_runs"),
                ("api/pipeline_runs?_limit=1000", "api/pipeline_runs?_limit=1000"),
                (
                    f"api/pipeline_runs?_limit=30&_offset={offset}",
                    f"api/pipeline_runs?_limit=30&_offset={offset}",
                ),
                ("api/pipeline_runs?status=failed", "api/pipeline_runs?status=failed"),
                ("api/pipeline_runs?pipeline_uuid=bench", "api/pipeline_runs?pipeline_uuid=bench"),
                (
                    "api/pipeline_schedules/{id}/pipeline_runs",
                    f"api/pipeline_schedules/{one}/pipeline_runs",
                ),
                ("api/pipeline_schedules", "api/pipeline_schedules"),
            ]
            connection = self.kit.connection(server.port)  # keep-alive, token in the query
            try:
                for shown, path in pages:
                    await self.quiet()
                    sep = "&" if "?" in path else "?"
                    times: list[float] = []
                    size = 0
                    for i in range(c.list_warmup + c.list_samples):
                        t = time.perf_counter()
                        status, body = await connection.request("GET", f"{path}{sep}{token}", b"")
                        elapsed = time.perf_counter() - t
                        if status != 200:
                            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
                        size = len(body)
                        if i >= c.list_warmup:
                            times.append(elapsed)
                    med, p90 = pct(times, 50), pct(times, 90)
                    self.rows.append(
                        ScaleRow(
                            f"`GET {shown}`",
                            f"median **{med * 1e3:.1f} ms**, p90 {p90 * 1e3:.1f} ms, "
                            f"{size:,} bytes",
                            "≤ 10 ms (median)",
                            med <= 0.010,
                            f"{self.seeded:,} runs; median of {len(times)} after "
                            f"{c.list_warmup} warmups, one keep-alive connection",
                        )
                    )
            finally:
                connection.close()
        finally:
            await server.stop()
        self.notes.append("`api/pipelines` shows no run counts, so it is not timed at scale.")

    # -- the report ---------------------------------------------------------------------------

    def report(self) -> list[str]:
        c = self.counts
        seeded = (
            f"{self.seeded:,} runs seeded in {self.seed_seconds:.1f} s"
            if self.seeded
            else "no runs seeded"
        )
        lines = [
            "### Speed at scale",
            "",
            (
                "Servers with default MageApp settings (kernel_pool_size default, "
                f"max_concurrent_runs={self.bench.opts.max_concurrent_runs}), a fresh one for "
                f"the isolated row and one for the list pages; {c.cadence_runs} cadence runs, "
                f"{c.isolated_runs} isolated runs from {c.isolated_clients} clients, "
                f"{c.repeats} chain and bytes run(s), list pages: {seeded} (bench pipeline, 3 "
                f"block runs each, ~90% completed, 8% failed, 2% cancelled, 4 triggers), "
                f"{c.list_samples} samples per page; floor (d) median "
                f"{self.floor_median * 1e3:.1f} ms, this run."
            ),
            "",
            "| row | measured | target | met? | how |",
            "|---|---|---|---|---|",
        ]
        for row in self.rows:
            met = "" if row.met is None else ("yes" if row.met else "**no**")
            lines.append(f"| {row.name} | {row.measured} | {row.target} | {met} | {row.how} |")
        lines.append("")
        lines += [f"- {note}" for note in self.notes]
        return [*lines, ""] if self.notes else lines


# -- helpers ----------------------------------------------------------------------------------


def _median(percentile: Callable[[Sequence[float], float], float], values: list[float]) -> float:
    return percentile(values, 50)


def own_ticks(pid: int) -> int:
    """utime + stime of one process: its own CPU, not its children's."""
    stat = proc_stat(pid)
    if stat is None:
        raise RuntimeError(f"process {pid} is gone")
    return stat[1]


def tree_cpu_ticks(root: int) -> int:
    """CPU ticks of ``root`` and every live process below it, children they reaped included.

    ``processes.tree_ticks`` counts live processes only: a kernel that ran one run and exited
    between the two readings would not be counted. Its ticks move to the ``cutime``/``cstime``
    of the process that reaped it (the server, or the fork parent), so those are added here.
    """
    pids = [root, *descendants(root)]
    total = 0
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total


async def floor_execute(floor: Floor, code: str, expected: str) -> float:
    """Seconds of one execute request of ``code`` on the floor's running kernel."""
    outputs: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            outputs.append(msg["content"]["text"])

    t0 = time.perf_counter()
    reply = await floor.kc.execute_interactive(
        code, store_history=False, allow_stdin=False, output_hook=hook, timeout=120
    )
    elapsed = time.perf_counter() - t0
    if reply["content"]["status"] != "ok" or expected not in "".join(outputs):
        raise RuntimeError(f"floor execute failed: {reply['content']} {outputs}")
    return elapsed


def seed_runs(
    url: str, total: int, trigger_ids: list[int], blocks: list[str], budget: float | None
) -> int:
    """Insert ``total`` finished runs of the bench pipeline with their block runs (SQLAlchemy
    Core, in chunks), spread over ``trigger_ids`` and the last 50 days; return how many.

    With a ``budget`` (seconds), stop after 10,000 runs if the rest would exceed it.
    """
    from sqlalchemy import create_engine, func, select

    from jupyter_mage.storage.schema import BLOCK_RUNS, RUNS

    rng = random.Random(5)
    engine = create_engine(url)
    chunk = 5_000
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    first = now - timedelta(days=50)
    step = timedelta(days=50) / total
    t0 = time.perf_counter()
    done = 0
    try:
        with engine.begin() as conn:
            run_id = int(conn.execute(select(func.coalesce(func.max(RUNS.c.id), 0))).scalar_one())
        while done < total:
            runs: list[dict[str, Any]] = []
            block_runs: list[dict[str, Any]] = []
            for _ in range(min(chunk, total - done)):
                run_id += 1
                done += 1
                created = first + step * done
                started = created + timedelta(milliseconds=5)
                ended = started + timedelta(milliseconds=40)
                draw = rng.random()
                status = "completed" if draw < 0.90 else "failed" if draw < 0.98 else "cancelled"
                trigger = trigger_ids[rng.randrange(len(trigger_ids))]
                runs.append(
                    {
                        "id": run_id,
                        "pipeline_schedule_id": trigger,
                        "pipeline_uuid": "bench",
                        "execution_date": created,
                        "status": status,
                        "started_at": started,
                        "completed_at": ended,
                        "created_at": created,
                        "updated_at": ended,
                        "variables": {"env": "staging", "schema": "public"},
                        "passed_sla": False,
                        "metrics": {"error": "seeded failure"} if status == "failed" else None,
                        "executor_type": "jupyter_kernel",
                        "trigger_name": f"scale list {trigger_ids.index(trigger)}",
                    }
                )
                states = {
                    "completed": ["completed"] * 3,
                    "failed": ["completed", "failed", "upstream_failed"],
                    "cancelled": ["completed", "cancelled", "cancelled"],
                }[status]
                for uuid, state in zip(blocks, states, strict=False):
                    block_runs.append(
                        {
                            "pipeline_run_id": run_id,
                            "block_uuid": uuid,
                            "status": state,
                            "started_at": started,
                            "completed_at": ended,
                            "created_at": started,
                            "updated_at": ended,
                            "logs": "",
                            "outputs": [],
                        }
                    )
            with engine.begin() as conn:
                conn.execute(RUNS.insert(), runs)
                conn.execute(BLOCK_RUNS.insert(), block_runs)
            elapsed = time.perf_counter() - t0
            if budget is not None and done >= 10_000 and elapsed * total / done > budget:
                break
    finally:
        engine.dispose()
    return done
