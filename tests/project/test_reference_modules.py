"""Slow reference implementations live beside the fast code they check (``gmnerf_ns/<layer>/_reference.py``), where a
reader sees both; tests import them from there and define none of their own, and import no private helper."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_PRIVATE = {("data/parsers/test_safe_pickle.py", "gmnerf_ns.data.parsers._safe_pickle._FROMBUFFER")}
"""Private names a test may import: internals the test pins (the unpickler's resolved numpy function)."""


def defined_references(text: str) -> List[str]:
    """Names of the functions in ``text`` (at any depth) that are references: ``reference`` or ``reference_*``."""
    return [node.name for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (node.name == "reference" or node.name.startswith("reference_"))]


def private_imports(text: str) -> List[str]:
    """``module.name`` of each private gmnerf_ns function, class or constant that ``text`` imports by name.

    Private modules (``_files``, ``_reference``...) are a package's shared helpers and may be imported.
    """
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gmnerf_ns":
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if alias.name.startswith("_") and not _is_module(name):
                    found.append(name)
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_reference_modules_say_what_they_are_the_reference_for():
    modules = sorted((ROOT / "gmnerf_ns").rglob("_reference.py"))
    assert [p.parent.name for p in modules] == ["geometry", "model"]
    for path in modules:
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring is not None and "\n" not in docstring, path
        assert docstring.startswith("Reference") and "slow and simple on purpose" in docstring, path


def files_under_tests() -> Dict[str, Path]:
    """Every Python file under ``tests/`` (subfolders and fixtures included), by its path relative to ``tests/``."""
    return {path.relative_to(ROOT / "tests").as_posix(): path for path in sorted((ROOT / "tests").rglob("*.py"))}


def test_tests_define_no_reference_implementations():
    found = {name: defined_references(path.read_text()) for name, path in files_under_tests().items()}
    assert {name: names for name, names in found.items() if names} == {}


def test_tests_import_no_private_helpers():
    found = {(name, private) for name, path in files_under_tests().items() for private in private_imports(path.read_text())}
    assert found - ALLOWED_PRIVATE == set()


def test_the_checks_find_a_reference_and_a_private_import():
    text = ("from gmnerf_ns.model.sources import _splat_depth, proxy_depth_maps\n"
            "from gmnerf_ns.data.parsers import _files\n"
            "from gmnerf_ns.model._reference import reference_slab_test\n"
            "def reference_slab(o, d):\n    pass\n"
            "def test_x():\n    def reference(q):\n        return q\n")
    assert private_imports(text) == ["gmnerf_ns.model.sources._splat_depth"]
    assert defined_references(text) == ["reference_slab", "reference"]
