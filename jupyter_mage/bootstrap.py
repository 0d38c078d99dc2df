"""A run's execute request: the in-kernel run-time and the plan, both as string literals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from . import runtime

RUNTIME_SOURCE = Path(runtime.__file__).read_text(encoding="utf-8")
RUNTIME_DIGEST = hashlib.sha256(RUNTIME_SOURCE.encode()).hexdigest()[:16]

# Loads the runtime as a private module (once per kernel: warm kernels have it preloaded), then
# runs the plan. Every argument is a string literal made with repr().
_BOOTSTRAP = """\
def __jupyter_mage_bootstrap(source, digest, plan, cwd):
    import os, sys, types
    module = sys.modules.get('_jupyter_mage_runtime')
    if getattr(module, '__digest__', None) != digest:
        if source is None:
            raise RuntimeError('jupyter-mage: the warm kernel lost its run-time')
        module = types.ModuleType('_jupyter_mage_runtime')
        exec(compile(source, '<jupyter-mage runtime>', 'exec'), module.__dict__)
        module.__digest__ = digest
        module.__home__ = os.getcwd()
        sys.modules['_jupyter_mage_runtime'] = module
    if plan is not None:
        if cwd:
            os.chdir(cwd)
        module.run_pipeline(plan)
try:
    __jupyter_mage_bootstrap({source!r}, {digest!r}, {plan!r}, {cwd!r})
finally:
    del __jupyter_mage_bootstrap
"""


def kernel_code(payload: dict[str, Any] | None, cwd: str = "", preloaded: bool = False) -> str:
    """The execute request of a run: the runtime's source and the plan, both as string literals.

    Nothing from the request is spliced into code: the plan is JSON text inside a Python string
    literal (``repr`` of a ``str`` is always a valid, inert literal) and is decoded by
    ``json.loads`` inside the kernel. ``cwd`` (the notebook's folder, relative to the root dir
    where kernels start) is a literal too. ``payload=None`` only loads the runtime (warm-up);
    ``preloaded`` leaves the runtime's 30 kB source out (a warm kernel has it already).
    """
    plan = None if payload is None else json.dumps(payload, allow_nan=False)
    source = None if preloaded else RUNTIME_SOURCE
    return _BOOTSTRAP.format(source=source, digest=RUNTIME_DIGEST, plan=plan, cwd=cwd)
