"""The codebase stays one a new maintainer can carry: small modules and functions outside the lab, no
import cycles inside the package, lint and types clean."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGE = REPO / "pipeline"
PRODUCT = sorted(p for p in PACKAGE.rglob("*.py") if "lab" not in p.relative_to(PACKAGE).parts)
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_product_module_is_over_600_lines():
    long = {
        p.relative_to(REPO).as_posix(): n for p in PRODUCT if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these modules (at most {MAX_MODULE_LINES} lines outside pipeline/lab/): {long}"


def test_no_product_function_is_over_80_lines():
    long = []
    for p in PRODUCT:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"split these functions (at most {MAX_FUNCTION_LINES} lines): {long}"


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, at its top level or inside functions."""
    me = _module_name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else ".".join(me.split(".")[: -node.level] + [node.module])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != me and m != "pipeline"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_package_has_no_import_cycle():
    graph = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_test_imports_another_test_file():
    offenders = []
    for p in (REPO / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            offenders += [f"{p.relative_to(REPO)}: {n}" for n in names if n.split(".")[-1].startswith("test_")]
    assert not offenders, f"shared test code goes in tests/support.py: {offenders}"


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return exe


def test_ruff_finds_nothing():
    out = subprocess.run(
        [_tool("ruff"), "check", "--quiet", "pipeline", "tests"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    fmt = subprocess.run(
        [_tool("ruff"), "format", "--check", "--quiet", "pipeline", "tests"], cwd=REPO, capture_output=True, text=True
    )
    assert fmt.returncode == 0, f"run `ruff format pipeline tests`:\n{fmt.stdout}{fmt.stderr}"


def test_mypy_finds_nothing():
    out = subprocess.run([_tool("mypy"), "pipeline"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
