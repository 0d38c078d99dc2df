"""A run's execute request: the in-kernel run-time and the plan, both as string literals."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runtime

#: The run-time's sources as ``(piece, source)`` pairs, in the order the kernel executes them:
#: the pieces in dependency order, then the package's own ``__init__`` (see :mod:`.runtime`).
RUNTIME_SOURCES: tuple[tuple[str, str], ...] = tuple(
    (name, (Path(runtime.__file__).parent / f"{name}.py").read_text(encoding="utf-8"))
    for name in (*runtime.PIECES, "__init__")
)
RUNTIME_DIGEST = hashlib.sha256(json.dumps(RUNTIME_SOURCES).encode()).hexdigest()[:16]

# Loads the run-time as a private package (once per kernel: warm kernels have it preloaded), then
# runs the plan. Every argument is a literal made with repr(). The package and its pieces are in
# sys.modules before the pieces run, so that their relative imports (from .calls import ...) find
# the pieces executed before them; a failed load leaves none of them behind.
_BOOTSTRAP = """\
def __jupyter_mage_bootstrap(sources, digest, plan, cwd, elsewhere):
    import os, sys, types
    package = sys.modules.get('_jupyter_mage_runtime')
    if getattr(package, '__digest__', None) != digest:
        if sources is None:
            raise RuntimeError('jupyter-mage: the warm kernel lost its run-time')
        package = types.ModuleType('_jupyter_mage_runtime')
        package.__path__ = []
        package.__package__ = '_jupyter_mage_runtime'
        names = [n for n in sys.modules if n.startswith('_jupyter_mage_runtime.')]
        for name in names:
            del sys.modules[name]
        sys.modules['_jupyter_mage_runtime'] = package
        try:
            for name, source in sources:
                if name == '__init__':
                    module = package
                else:
                    module = types.ModuleType('_jupyter_mage_runtime.' + name)
                    module.__package__ = '_jupyter_mage_runtime'
                    sys.modules[module.__name__] = module
                    setattr(package, name, module)
                filename = '<jupyter-mage runtime/' + name + '.py>'
                exec(compile(source, filename, 'exec'), module.__dict__)
        except BaseException:
            for name in [n for n in sys.modules if n.startswith('_jupyter_mage_runtime')]:
                del sys.modules[name]
            raise
        package.__digest__ = digest
        package.__home__ = os.getcwd()
        package.__loaded_in__ = os.getpid()
    if plan is not None:
        package.enter_folder(cwd, elsewhere)
        package.run_pipeline(plan)
try:
    __jupyter_mage_bootstrap({sources!r}, {digest!r}, {plan!r}, {cwd!r}, {elsewhere!r})
finally:
    del __jupyter_mage_bootstrap
"""


#: A run's cell on a kernel that has the run-time (see :func:`run_request`): one line.
_RUN_REQUESTED = "__import__('sys').modules['_jupyter_mage_runtime'].run_requested()\n"


@dataclass(frozen=True)
class RunRequest:
    """A run's execute request: its code, and its metadata (None: no metadata)."""

    code: str
    metadata: dict[str, Any] | None = None


def run_request(
    payload: dict[str, Any], cwd: str = "", preloaded: bool = False, elsewhere: bool = False
) -> RunRequest:
    """A run's execute request (see :func:`kernel_code` for the arguments).

    On a kernel that has the run-time (``preloaded``), the plan travels in the request's
    metadata and the cell is one line: IPython transforms every cell and ipykernel hashes its
    text in pure Python to name it, which for a plan in the cell cost milliseconds per run.
    Elsewhere the plan is a literal in the cell that loads the run-time.
    """
    if not preloaded:
        return RunRequest(kernel_code(payload, cwd, elsewhere=elsewhere))
    given = {"digest": RUNTIME_DIGEST, "plan": payload, "cwd": cwd, "elsewhere": elsewhere}
    # As in the cell: no NaN or infinity, which JSON cannot carry (ValueError, before sending).
    json.dumps(payload, allow_nan=False)
    return RunRequest(_RUN_REQUESTED, {"jupyter_mage": given})


def kernel_code(
    payload: dict[str, Any] | None,
    cwd: str = "",
    preloaded: bool = False,
    elsewhere: bool = False,
) -> str:
    """The execute request of a run: the runtime's sources and the plan, all as literals.

    Nothing from the request is spliced into code: the plan is JSON text inside a Python string
    literal (``repr`` of a ``str`` is always a valid, inert literal) and is decoded by
    ``json.loads`` inside the kernel. ``cwd`` (the notebook's folder, relative to the root dir
    where kernels start) is a literal too, and so are the runtime's sources (a tuple of pairs of
    strings). ``payload=None`` only loads the runtime (warm-up); ``preloaded`` leaves the
    runtime's 50 kB of source out (a warm kernel has it already). ``elsewhere``: the kernel
    may be on another machine (a gateway's); ``cwd`` is then the notebook's absolute folder,
    entered if the kernel sees it (a shared volume at the same path), else the run stays in
    the folder the gateway started the kernel in, and says so on stderr.
    """
    plan = None if payload is None else json.dumps(payload, allow_nan=False)
    sources = None if preloaded else RUNTIME_SOURCES
    return _BOOTSTRAP.format(
        sources=sources, digest=RUNTIME_DIGEST, plan=plan, cwd=cwd, elsewhere=elsewhere
    )
