"""Mage's layout for a Mage project, and the parts of ``mage_ai`` blocks import without Mage.

Part of the in-kernel run-time (:mod:`jupyter_mage.runtime`): standard library only, sent to
the kernel as source, so it imports the other pieces only relatively.

**Layout.** Mage runs a project's blocks with the working directory at the project's *parent*,
the parent on ``sys.path`` (so ``from my_project.utils import x`` works) and ``get_repo_path()``
answering the project folder (the environment variable ``MAGE_REPO_PATH``, which Mage's own
``get_repo_path`` reads first, so a kernel with mage-ai installed agrees). A notebook that
belongs to a Mage project (``metadata.mage.project.repo_path``, relative to the notebook) gets
the same for a triggered run (:class:`ProjectLayout`, undone after the run) and for hand runs
(:func:`enter_project`, kept for the kernel's session).

**``mage_ai`` without mage-ai.** :func:`install_mage_stand_in` appends an import finder to
``sys.meta_path``. Being last, it is asked only for names no other finder knows: with mage-ai
installed in the kernel's environment the real package is imported, untouched. Without it the
finder provides what blocks import besides the decorators (the decorators are predefined, which
is what Mage's guarded ``if 'data_loader' not in globals()`` imports rely on): the decorators
module itself, ``get_repo_path`` (``mage_ai.settings.repo``,
``mage_ai.data_preparation.repo_manager``) and ``get_secret_value``
(``mage_ai.data_preparation.shared.secrets``). Every other ``mage_ai`` module (``mage_ai.io``,
``mage_ai.data_cleaner``, ...) fails with a message that says how to install mage-ai in the
kernel's environment: a stand-in for Mage's I/O would be a second, subtly different Mage.
With mage-ai installed, one module is changed: Mage's ``get_secret_value`` answers None for a
secret it does not know; wrapped, it then looks in the environment as the stand-in does and
raises :class:`SecretNotFound` (a None password surfaces much later as a confusing error).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from typing import Any

from .decorators import DECORATORS

#: The environment variable Mage's ``get_repo_path`` reads (and Mage's runtime sets).
REPO_PATH_VARIABLE = "MAGE_REPO_PATH"
#: Mage also exports the project's path under this name (``Block.enrich_global_vars``).
RUNTIME_REPO_PATH_VARIABLE = "MAGE_RUNTIME__REPO_PATH"
#: ``get_secret_value('x')`` reads ``MAGE_SECRET_X`` first, then ``x`` itself.
SECRET_PREFIX = "MAGE_SECRET_"  # noqa: S105 - a variable name prefix, no secret


class SecretNotFound(KeyError):
    """``get_secret_value`` found no secret of that name (Mage would return None)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "secret not found"


def get_repo_path(*args: Any, **kwargs: Any) -> str:
    """Mage's ``get_repo_path()``: ``MAGE_REPO_PATH``, else the working directory (as Mage)."""
    return os.environ.get(REPO_PATH_VARIABLE) or os.getcwd()


def get_secret_value(name: str, *args: Any, **kwargs: Any) -> str:
    """Mage's ``get_secret_value(name)`` without Mage's secrets database.

    The secret is the environment variable ``MAGE_SECRET_<NAME>`` (the name upper-cased, other
    characters than letters and digits as ``_``), else the variable named exactly ``name``, in
    the kernel's environment. A missing secret raises :class:`SecretNotFound` (Mage returns
    None, which surfaces later as a confusing connection error).
    """
    if not isinstance(name, str) or not name:
        raise SecretNotFound("get_secret_value needs a secret name")
    safe = "".join(c if c.isalnum() else "_" for c in name).upper()
    for variable in (SECRET_PREFIX + safe, name):
        value = os.environ.get(variable)
        if value is not None:
            return value
    raise SecretNotFound(
        f"secret {name!r} not found: set the environment variable {SECRET_PREFIX}{safe} "
        f"(or {name}) in the kernel's environment"
    )


def install_hint(module: str) -> str:
    """The message of a ``mage_ai`` module that needs mage-ai itself."""
    return (
        f"No module named {module!r}: it is part of mage-ai, which is not installed in this "
        f"kernel's environment ({sys.executable}). jupyter-mage provides Mage's decorators, "
        "get_repo_path and get_secret_value without it; for Mage's I/O classes "
        f"(mage_ai.io...) and the rest, install it there: {sys.executable} -m pip install "
        "mage-ai (or, in a notebook cell of this kernel: %pip install mage-ai), then restart "
        "the kernel."
    )


#: The stand-in's modules and what they define (packages are the names other modules start with).
_PROVIDED: dict[str, dict[str, Any]] = {
    "mage_ai.data_preparation.decorators": dict(DECORATORS),
    "mage_ai.settings.repo": {"get_repo_path": get_repo_path},
    "mage_ai.data_preparation.repo_manager": {"get_repo_path": get_repo_path},
    "mage_ai.data_preparation.shared.secrets": {"get_secret_value": get_secret_value},
}
_PACKAGES = {
    ".".join(name.split(".")[:i]) for name in _PROVIDED for i in range(1, name.count(".") + 1)
}


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__name__
        if name not in _PROVIDED and name not in _PACKAGES:
            raise ModuleNotFoundError(install_hint(name), name=name)
        module.__dict__.update(_PROVIDED.get(name, {}))
        module.__doc__ = "jupyter-mage's stand-in (mage-ai is not installed in this kernel)."


class MageStandInFinder(importlib.abc.MetaPathFinder):
    """Finds ``mage_ai`` modules no other finder found (mage-ai is not installed)."""

    #: Marks the finder whichever copy of the run-time defined it (kernel-private or exported).
    jupyter_mage_stand_in = True

    def find_spec(
        self, fullname: str, path: Any = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "mage_ai" and not fullname.startswith("mage_ai."):
            return None
        package = fullname in _PACKAGES
        # Unknown modules get a spec too: their loader raises the install hint.
        return importlib.machinery.ModuleSpec(fullname, _StandInLoader(), is_package=package)


_SECRETS_MODULE = "mage_ai.data_preparation.shared.secrets"


class _SecretsLoader(importlib.abc.Loader):
    """Mage's own secrets module, with a ``get_secret_value`` that never answers None."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        module: types.ModuleType | None = self.loader.create_module(spec)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        self.loader.exec_module(module)
        mage_get = getattr(module, "get_secret_value", None)
        if not callable(mage_get):
            return

        def get_secret_value_or_raise(name: str, *args: Any, **kwargs: Any) -> Any:
            # Mage's secrets database first; None (Mage's "not found") is never the answer.
            value = mage_get(name, *args, **kwargs)
            return get_secret_value(name) if value is None else value

        get_secret_value_or_raise.__doc__ = mage_get.__doc__
        module.get_secret_value = get_secret_value_or_raise  # type: ignore[attr-defined]


class MageSecretsFinder(importlib.abc.MetaPathFinder):
    """With mage-ai installed: its secrets module, wrapped by :class:`_SecretsLoader`."""

    jupyter_mage_secrets = True

    def find_spec(
        self, fullname: str, path: Any = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _SECRETS_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or getattr(finder, "jupyter_mage_stand_in", False):
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None and spec.loader is not None:
                spec.loader = _SecretsLoader(spec.loader)
                return spec  # type: ignore[no-any-return]
        return None  # mage-ai is not installed: the stand-in provides the module


def install_mage_stand_in() -> None:
    """Append the stand-in finder to ``sys.meta_path``, and put the secrets finder first
    (once per interpreter)."""
    if not any(getattr(f, "jupyter_mage_stand_in", False) for f in sys.meta_path):
        sys.meta_path.append(MageStandInFinder())
    if not any(getattr(f, "jupyter_mage_secrets", False) for f in sys.meta_path):
        sys.meta_path.insert(0, MageSecretsFinder())


def resolve_repo_path(repo_path: str, base: str) -> str:
    """The project's absolute folder: ``repo_path`` relative to ``base`` (the notebook's folder)."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(repo_path)))


def enter_project(project_dir: str) -> None:
    """Mage's layout, for the rest of the session: cwd, ``sys.path``, ``MAGE_REPO_PATH``."""
    parent = os.path.dirname(project_dir)
    os.chdir(parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    os.environ[REPO_PATH_VARIABLE] = project_dir
    os.environ[RUNTIME_REPO_PATH_VARIABLE] = project_dir


class ProjectLayout:
    """Mage's layout for one triggered run, undone afterwards (a warm kernel is reused).

    Undoing also forgets the modules imported from the project (``my_project.utils``), so
    the next run sees the project's files as they are then, as a fresh Mage process would.
    """

    def __init__(self, project_dir: str) -> None:
        self.project_dir = project_dir
        self._saved: tuple[str, list[str], dict[str, str | None]] | None = None

    def __enter__(self) -> None:
        if not os.path.isdir(self.project_dir):
            raise FileNotFoundError(
                f"Mage project folder {self.project_dir} not found (metadata.mage.project."
                "repo_path of the notebook, relative to the notebook's folder)"
            )
        variables = (REPO_PATH_VARIABLE, RUNTIME_REPO_PATH_VARIABLE)
        self._saved = (os.getcwd(), list(sys.path), {v: os.environ.get(v) for v in variables})
        enter_project(self.project_dir)

    def __exit__(self, *exc_info: object) -> None:
        if self._saved is None:
            return
        cwd, path, variables = self._saved
        try:
            os.chdir(cwd)
        except OSError:
            pass
        sys.path[:] = path
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        top = os.path.basename(self.project_dir)
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
