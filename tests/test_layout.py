"""The layout rules of ARCHITECTURE.md, checked by scripts/check_layout.py on the real tree (and the checker
itself on small made-up cases, so that a rule it silently stopped enforcing would show)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_layout.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_layout", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_tree_keeps_the_layout_rules() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "layout ok" in done.stdout


def test_the_checker_finds_cycles_and_long_signatures(tmp_path: Path) -> None:
    check = _checker()
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert check.cycles(graph) == [["a", "b", "c"]]
    assert check.reachable({"p.x": {"p.y"}, "p.y": set(), "p": set(), "q": set()}, "p.x") == {"p.x", "p.y", "p"}
    pkg = tmp_path / "tuner_model"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "wide.py").write_text("def f(self, a, b, c, d, e, f, g, h, i):\n    pass\n")
    (pkg / "lazy.py").write_text("def g():\n    from service import x\n")
    files = {"tuner_model": pkg / "__init__.py", "tuner_model.wide": pkg / "wide.py",
             "tuner_model.lazy": pkg / "lazy.py", "service": pkg / "__init__.py"}
    assert check.size_problems(files) == ["tuner_model.wide.f (line 1): 9 parameters (over 8)"]
    assert "service" in check.import_graph(files)["tuner_model.lazy"]  # a function-local import counts


def test_typing_imports_count_for_cycles_but_load_nothing(tmp_path: Path) -> None:
    check = _checker()
    (tmp_path / "a.py").write_text("from typing import TYPE_CHECKING\nimport b\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n"
                                   "else:\n    import c\n")
    (tmp_path / "c.py").write_text("")
    files = {m: tmp_path / f"{m}.py" for m in ("a", "b", "c")}
    graph, loads = check.import_graph(files), check.import_graph(files, typing=False)
    assert graph["b"] == {"a", "c"} and check.cycles(graph) == [["a", "b"]]  # a cycle for the design
    assert loads["b"] == {"c"} and check.cycles(loads) == []  # importing b loads c only (its else: runs)
