"""The package's shape, read from the source (ast): its import graph has no circles and every
import points down the flow (imports inside functions included, so a circle cannot hide in a
deferred import); no function is longer than MAX_FUNCTION_LINES code lines, generated kernels
(unrolled sorting networks in a module a generator wrote) excepted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lrscube"

#: the layers, bottom first: a module may import from its own layer and the ones below it
LAYERS = [
    {"times", "intervals", "config"},
    {"storage", "deploy", "plots"},
    {"intake"},
    {"masks"},
    {"detection"},  # a detect run commits its intervals with the mask cube masks builds from them
    {"validation", "reporting"},
    {"cli", "demo"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    base = current.split(".") if is_package else current.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{a.name}" for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """module -> the lrscube modules it imports (the package ``lrscube`` itself left out)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(name, path.name == "__init__.py", node)
            else:
                continue
            for t in targets:
                if t in mods and t != name and t != "lrscube":
                    graph[name].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int | None:
    part = module.split(".")[1] if "." in module else None
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    return None


def test_the_package_has_no_import_circles():
    assert _cycles(import_graph()) == []


def test_every_import_points_down_the_flow():
    upward = [(a, b) for a, targets in import_graph().items() for b in targets
              if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
    assert upward == []


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m != "lrscube" and _layer(m) is None] == []


@pytest.mark.parametrize("graph, cycles", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_circle_finder_finds_circles(graph, cycles):
    assert _cycles(graph) == cycles


# --------------------------------------------------------------------------------------------
# function length: a function reads as the method's steps, each a function of its own

#: the most code lines a function body may hold (docstrings, comments and blank lines not counted)
MAX_FUNCTION_LINES = 60


def code_lines(source: str, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Code lines of ``fn``'s body in ``source``: nested functions included (they are read with
    it); blank lines, comment-only lines and docstrings (its own and nested ones) left out."""
    lines = source.splitlines()
    skip = set()
    for node in ast.walk(fn):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and ast.get_docstring(node):
            doc = node.body[0]
            skip.update(range(doc.lineno, doc.end_lineno + 1))
    first = fn.body[0].lineno
    return sum(1 for i in range(first, fn.end_lineno + 1)
               if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def generated_kernel(module: ast.Module, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Exempt from the limit: straight-line code a generator wrote (an unrolled sorting network,
    lrscube.detection.running.median_kernel_source), in a module whose docstring says it is
    generated and not to be edited, the function's own docstring saying what it is."""
    mod_doc = " ".join((ast.get_docstring(module) or "").split())
    fn_doc = " ".join((ast.get_docstring(fn) or "").split())
    return (mod_doc.startswith("Generated by") and "Do not edit" in mod_doc
            and "Generated straight-line code (an unrolled sorting network)" in fn_doc)


def long_functions(source: str, name: str = "<source>", limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``module:line function (n lines)`` of each function in ``source`` over ``limit`` code lines."""
    tree = ast.parse(source, name)
    return [f"{name}:{node.lineno} {node.name} ({n} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (n := code_lines(source, node)) > limit and not generated_kernel(tree, node)]


def test_no_function_is_over_the_length_limit():
    too_long = [f for path in sorted(PACKAGE.rglob("*.py"))
                for f in long_functions(path.read_text(), str(path.relative_to(PACKAGE.parent)))]
    assert too_long == []


def _function(n_code: int, doc: str = "One step.") -> str:
    body = "".join(f"    x{i} = {i}\n    # why\n\n" for i in range(n_code - 1))
    return f'def f():\n    """{doc}\n\n    More."""\n{body}    return 0\n'


@pytest.mark.parametrize("source, flagged", [
    (_function(60), []),
    (_function(61), ["<source>:1 f (61 lines)"]),
    # a kernel's docstring outside a generated module is no exemption
    (_function(61, "Generated straight-line code (an unrolled sorting network)."), ["<source>:1 f (61 lines)"]),
    ('"""Generated by a tool. Do not edit."""\n' + _function(61, "Generated straight-line code (an unrolled "
                                                              "sorting network)."), []),
    # nested functions count with the function that holds them
    ("def g():\n" + "".join("    " + ln + "\n" for ln in _function(59).splitlines()) + "    return f\n",
     ["<source>:1 g (61 lines)"]),
])
def test_the_length_check_counts_code_lines(source, flagged):
    assert long_functions(source) == flagged
