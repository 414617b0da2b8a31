#!/usr/bin/env python3
"""Checks the layout rules of ARCHITECTURE.md; tests/test_layout.py runs it. Exit status 1 and one line per
broken rule otherwise.

- No import cycles between modules. Every import counts: one inside a function (a lazy import is still a
  dependency) and one under `if TYPE_CHECKING:` (a module that names another's types depends on it; a
  cycle hidden from the interpreter is still a cycle in the design, and usually hides a real call back).
- One direction of dependency, typing imports included: tuner_model imports nothing from service, worker
  or tuner_cli; service nothing from worker or tuner_cli; worker nothing from tuner_cli.
- Decoding loads no training code: tuner_model.codec reaches no tuner_model.train or encoder module, by
  the import graph of the imports that run (those under `if TYPE_CHECKING:` load nothing, so they do not
  count here) and by running a decode in a fresh interpreter.
- No module over MAX_LINES lines unless its docstring says why ("Over 300 lines: ..."), no function with
  more than MAX_PARAMS parameters (self and cls not counted).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tuner_model", "tuner_cli", "service", "worker")
# package -> the packages it must never import
FORBIDDEN = {
    "tuner_model": ("service", "worker", "tuner_cli"),
    "service": ("worker", "tuner_cli"),
    "worker": ("tuner_cli",),
}
# What decoding a blob must not load.
TRAINING = ("tuner_model.train", "tuner_model.rate.pipeline", "tuner_model.rate.encode",
            "tuner_model.bench")
MAX_LINES, MAX_PARAMS = 300, 8
WHY_LONG = "Over 300 lines:"


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(node: ast.AST, typing: bool = True) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in `node`, at any depth; with typing=False, not those under
    `if TYPE_CHECKING:` (its `else:` branch runs, so it still counts)."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    if not typing and isinstance(node, ast.If) and _is_type_checking(node):
        yield from (n for b in node.orelse for n in _imports(b, typing))
        return
    for child in ast.iter_child_nodes(node):
        yield from _imports(child, typing)


def _resolve(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph(files: dict[str, Path], typing: bool = True) -> dict[str, set[str]]:
    """module -> the project modules it imports (`from pkg import mod` counts as importing pkg.mod); with
    typing=False, only the imports that run (not those under `if TYPE_CHECKING:`)."""
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps = graph.setdefault(mod, set())
        for node in _imports(ast.parse(path.read_text(), str(path)), typing):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(mod, path.name == "__init__.py", node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import a.b.c` of a name inside a module
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    deps.add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Modules loaded by importing `start`: its imports, transitively, and every package __init__ above each."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        m = todo.pop()
        if m in seen or m not in graph:
            continue
        seen.add(m)
        todo.extend(graph[m])
        parent = m.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return seen


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


DECODE_PROBE = """
import sys
from tuner_model.codec import QuantSpec, decode_blob, encode_blob, read_info
from tuner_model.models import ModelConfig, build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.render.fitted import render_image
cfg = ModelConfig(arch="tuner", channels=3, input_width=8, hidden=(8,), bandlimit=4, block_limit=2)
blob = encode_blob(FittedImage(cfg, 12, 8, build_model(cfg)), QuantSpec(16))
read_info(blob)
render_image(decode_blob(blob), 24, 16)
bad = sorted(m for m in sys.modules if m.startswith(%r))
print(" ".join(bad))
"""


def decode_loads() -> list[str]:
    """Training modules that a decode and a render load, in a fresh interpreter."""
    code = DECODE_PROBE % (TRAINING,)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        return [f"(the decode probe failed: {done.stderr.strip().splitlines()[-1:]})"]
    return done.stdout.split()


def size_problems(files: dict[str, Path]) -> list[str]:
    out = []
    for mod, path in files.items():
        src = path.read_text()
        tree = ast.parse(src)
        lines = src.count("\n")
        if lines > MAX_LINES and WHY_LONG not in (ast.get_docstring(tree) or ""):
            out.append(f"{mod}: {lines} lines (over {MAX_LINES}, and its docstring does not say why)")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
                n = len([x for x in names if x not in ("self", "cls")])
                if n > MAX_PARAMS:
                    out.append(f"{mod}.{node.name} (line {node.lineno}): {n} parameters (over {MAX_PARAMS})")
    return out


def problems() -> list[str]:
    files = module_files()
    graph = import_graph(files)  # every import: what the design depends on
    loads = import_graph(files, typing=False)  # the imports that run: what importing a module loads
    out = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for mod, deps in sorted(graph.items()):
        for pkg, banned in FORBIDDEN.items():
            if _in(mod, (pkg,)):
                out += [f"{mod} imports {d} ({pkg} must not import {d.split('.')[0]})"
                        for d in sorted(deps) if _in(d, banned)]
    out += [f"tuner_model.codec reaches training module {m}" for m in sorted(reachable(loads, "tuner_model.codec"))
            if _in(m, TRAINING)]
    out += [f"decoding a blob loads {m}" for m in decode_loads()]
    return out + size_problems(files)


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    if not found:
        print(f"layout ok: {len(module_files())} modules, no cycles, dependencies one way, decoding loads no training")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
