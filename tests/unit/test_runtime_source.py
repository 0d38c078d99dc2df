"""The run-time is sent as source: its pieces load as a private package, without jupyter-mage.

No kernel: the warm-up request (:func:`bootstrap.kernel_code` without a plan) is executed by a
fresh, isolated interpreter (``-I``: no current folder on the path, so ``jupyter_mage`` cannot be
imported there), as a kernel in another environment would execute it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from jupyter_mage import bootstrap, runtime

PACKAGE = Path(runtime.__file__).parent


def test_every_piece_imports_the_standard_library_and_earlier_pieces_only() -> None:
    assert [name for name, _ in bootstrap.RUNTIME_SOURCES] == [*runtime.PIECES, "__init__"]
    assert sorted(p.stem for p in PACKAGE.glob("*.py")) == sorted([*runtime.PIECES, "__init__"])
    for index, (name, source) in enumerate(bootstrap.RUNTIME_SOURCES):
        assert source == (PACKAGE / f"{name}.py").read_text(encoding="utf-8")
        earlier = set(runtime.PIECES[:index])
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level:
                # Type-checking-only imports of the package itself are never executed.
                assert node.level == 1 and (node.module in earlier or node.module is None), (
                    name,
                    node.module,
                )
            elif isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    modules = [node.module]
                for module in modules:
                    top = module.split(".")[0]
                    assert top in sys.stdlib_module_names or top == "IPython", (name, module)


def test_the_warm_up_loads_the_pieces_as_a_private_package() -> None:
    check = textwrap.dedent(
        """
        import sys
        package = sys.modules["_jupyter_mage_runtime"]
        assert "jupyter_mage" not in sys.modules
        for name in PIECES:
            piece = sys.modules["_jupyter_mage_runtime." + name]
            assert getattr(package, name) is piece and piece.__package__ == package.__name__
        calls = sys.modules["_jupyter_mage_runtime.calls"]
        assert package.call_block is calls.call_block
        assert package.TestFailure is calls.TestFailure

        @package.transformer
        def double(x, **kwargs):
            return x * 2, kwargs["block_uuid"]

        found = package.marked_functions({"double": double})
        assert package.call_block(found, [21], {"block_uuid": "b"}, "b", "transformer") == [42, "b"]
        loaded = package
        exec(PRELOADED)  # a warm kernel: the sources left out, the loaded package kept
        assert sys.modules["_jupyter_mage_runtime"] is loaded
        print("OK", package.__digest__)
        """
    )
    code = "\n".join(
        [
            bootstrap.kernel_code(None),
            f"PIECES = {runtime.PIECES!r}",
            f"PRELOADED = {bootstrap.kernel_code(None, preloaded=True)!r}",
            check,
        ]
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["OK", bootstrap.RUNTIME_DIGEST]


def test_a_piece_that_fails_to_load_leaves_no_package_behind() -> None:
    broken = (*bootstrap.RUNTIME_SOURCES[:2], ("summaries", "raise ImportError('broken')"))
    code = bootstrap._BOOTSTRAP.format(
        sources=broken, digest="x", plan=None, cwd="", elsewhere=False
    )
    check = textwrap.dedent(
        f"""
        import sys
        try:
            exec({code!r})
        except ImportError:
            pass
        print(sorted(n for n in sys.modules if n.startswith("_jupyter_mage")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", check], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
