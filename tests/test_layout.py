"""The shape of the project: the package never reaches into studies, its layers import one way, and the front
door and the benchmark table stay what their commands make them."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "taskology"


def _imports() -> dict[str, set[str]]:
    """Module -> the taskology/experiments modules it imports anywhere (module level or inside functions)."""
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        edges[module] = {m for m in found if m.split(".")[0] in ("taskology", "experiments")}
    return edges


def test_the_package_never_imports_a_study_and_the_engine_never_imports_reports() -> None:
    edges = _imports()
    assert not {m: i for m, i in edges.items() if any(x.startswith("experiments") for x in i)}
    engine = {m: {x for x in i if x.startswith(("taskology.report", "taskology.demo", "taskology.bench",
                                                    "taskology.experiment"))}
              for m, i in edges.items() if m.startswith("taskology.engine")}
    assert not {m: i for m, i in engine.items() if i}


def test_no_import_cycle_between_modules() -> None:
    edges = _imports()

    def reach(start: str) -> bool:
        stack, seen = list(edges.get(start, ())), set()
        while stack:
            module = stack.pop()
            if module == start:
                return True
            if module not in seen:
                seen.add(module)
                stack.extend(edges.get(module, ()))
        return False

    assert [m for m in edges if reach(m)] == []


def test_importing_the_runner_loads_no_benchmark_report_or_study_code() -> None:
    code = ("import sys, taskology.engine.runner; print(sorted(m for m in sys.modules if m.startswith("
            "('taskology.bench', 'taskology.report', 'taskology.experiment', 'taskology.demo', 'experiments'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_front_door_and_the_guides_stay_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
    for guide in ("relations.md", "cluster.md", "conventions.md", "data.md"):
        assert len((ROOT / "docs" / guide).read_text().splitlines()) <= 300, guide


def test_the_benchmark_table_is_what_its_command_writes(tmp_path: Path) -> None:
    import shutil

    from taskology.bench.index import write_index

    results = tmp_path / "benchmarks" / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    assert write_index(results).read_text() == (ROOT / "benchmarks" / "README.md").read_text(), (
        "benchmarks/README.md differs from what `taskology bench --index` writes from the results")
