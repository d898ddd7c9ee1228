"""Import boundaries (STYLE.md): only the edge module imports its edge library, and
the pure core does no I/O. Walks the source with `ast`; modules that do not exist
(yet) are skipped."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "streamvae"


@dataclass(frozen=True)
class Import:
    root: str  # top-level package name: `aiokafka` for `from aiokafka.structs import X`
    line: int
    module_level: bool  # executed on import (not inside a function, not TYPE_CHECKING)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(source: str) -> list[Import]:
    """Every absolute import in `source`, and whether it runs at import time."""
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(alias.name.split(".")[0], child.lineno, module_level))
            elif isinstance(child, ast.ImportFrom):
                if child.level == 0 and child.module:
                    found.append(Import(child.module.split(".")[0], child.lineno, module_level))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), module_level)
            else:
                visit(child, module_level)

    visit(ast.parse(source), True)
    return found


def _modules() -> dict[str, Path]:
    """`records`, `model/vae`, ... -> path, for every module of the package."""
    return {
        str(p.relative_to(PACKAGE).with_suffix("")).replace("\\", "/"): p
        for p in sorted(PACKAGE.rglob("*.py"))
    }


MODULES = _modules()

# library -> the only modules allowed to import it
EDGE_LIBRARIES = {
    "aiokafka": {"kafka"},
    "kafka": set(),  # kafka-python: never
    "prometheus_client": {"metrics"},
    "pydantic": {"config"},
    "pydantic_settings": {"config"},
    "pickle": set(),  # no pickle ever (safetensors / JSON)
    "dill": set(),
    "cloudpickle": set(),
}
NO_TORCH_AT_IMPORT = ["records", "batching", "config", "cli", "errors", "files", "__main__"]
PURE_CORE = ["records", "batching", "buffer", "detector", "model"]
IO_LIBRARIES = {"socket", "asyncio", "aiokafka", "subprocess"}


def _core_modules() -> list[str]:
    return [m for m in MODULES if m in PURE_CORE or m.split("/")[0] == "model"]


def _violations(names: list[str], banned: set[str], *, module_level_only: bool) -> list[str]:
    out = []
    for name in names:
        for imp in imports_of(MODULES[name].read_text(encoding="utf-8")):
            if imp.root in banned and (imp.module_level or not module_level_only):
                out.append(f"streamvae/{name}.py:{imp.line} imports {imp.root}")
    return out


@pytest.mark.parametrize("library", sorted(EDGE_LIBRARIES))
def test_edge_library_only_in_its_module(library: str) -> None:
    allowed = EDGE_LIBRARIES[library]
    others = [m for m in MODULES if m not in allowed]
    assert _violations(others, {library}, module_level_only=False) == []


@pytest.mark.parametrize("name", NO_TORCH_AT_IMPORT)
def test_no_torch_at_import_time(name: str) -> None:
    if name not in MODULES:
        pytest.skip(f"streamvae/{name}.py does not exist yet")
    assert _violations([name], {"torch"}, module_level_only=True) == []


def test_pure_core_does_no_io() -> None:
    core = _core_modules()
    if not core:
        pytest.skip("no pure-core module yet")
    assert _violations(core, IO_LIBRARIES, module_level_only=False) == []


def test_the_package_is_walked() -> None:
    assert "records" in MODULES
    assert "config" in MODULES


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import torch", [("torch", True)]),
        ("import torch.nn as nn", [("torch", True)]),
        ("from aiokafka.structs import TopicPartition", [("aiokafka", True)]),
        ("from . import records\nfrom .records import Reason", []),
        ("def f():\n    import torch", [("torch", False)]),
        ("async def f():\n    from asyncio import sleep", [("asyncio", False)]),
        ("class C:\n    def m(self):\n        import torch", [("torch", False)]),
        ("class C:\n    import socket", [("socket", True)]),
        ("try:\n    import orjson\nexcept ImportError:\n    pass", [("orjson", True)]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch",
         [("typing", True), ("torch", False)]),
        ("import typing\nif typing.TYPE_CHECKING:\n    import torch\nelse:\n    import numpy",
         [("typing", True), ("torch", False), ("numpy", True)]),
    ],
)  # fmt: skip
def test_imports_of(source: str, expected: list[tuple[str, bool]]) -> None:
    assert [(i.root, i.module_level) for i in imports_of(source)] == expected
