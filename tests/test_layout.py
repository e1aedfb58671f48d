"""The package's shape: imports run downward only, dvc.yaml's deps cover every file a stage
runs, and a registered model carries exactly the code it imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from segflow.registry.register import CODE

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

#: What each part may import (besides itself). The shared modules at the top of the
#: package (config, errors, outputs, metrics, colours, stage) import no part.
SHARED = {
    "segflow",
    "segflow.config",
    "segflow.errors",
    "segflow.outputs",
    "segflow.metrics",
    "segflow.colours",
    "segflow.cityscapes_labels",
    "segflow.prepared",
    "segflow.pixel_limit",
}
ALLOWED = {
    # The floors, bottom up; a part imports only parts on floors below its own.
    # The network and the one prediction path: all a registered model carries.
    "inference": {"segflow", "segflow.errors"},
    # Preprocess resizes with inference's own resize, so training sees what prediction sees.
    "data": SHARED | {"inference"},
    "registry": SHARED | {"inference"},
    "training": SHARED | {"data", "inference", "registry"},
    # A model loaded and run (a registered version or a file): no web code.
    "runtime": SHARED | {"inference", "registry"},
    # `segflow export`: ONNX files written, verified on the registered version's test split.
    "export": SHARED | {"inference", "registry", "runtime"},
    # The web service; its answers carry predicted regions as canonical records (data.trace).
    "serving": SHARED | {"data", "inference", "registry", "runtime"},
    # `segflow predict` (and the predict@NAME stage): a model loaded by the runtime, predictions
    # written back in the annotation tools' formats; never the web service.
    "predict": SHARED | {"data", "inference", "registry", "runtime"},
    # `segflow sweep`: on top of the registry (trials are DVC experiments run by DVC's own queue).
    "sweep": SHARED | {"registry"},
    "shared": SHARED,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def segflow_imports(path: Path) -> set[str]:
    """Every segflow module `path` imports, at any depth of its code (lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "segflow")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "segflow":
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if _file(f"{node.module}.{alias.name}"))
    return {name for name in found if _file(name)}


def closure(path: Path) -> set[Path]:
    """The files `path` runs: itself, every segflow module it imports, transitively, and
    the packages (``__init__.py``) those modules live in."""
    seen: set[Path] = set()
    todo = [path]
    if SRC in path.parents:  # the packages `path` itself lives in
        parts = _module_name(path).split(".")
        todo.extend(f for f in (_file(".".join(parts[:i])) for i in range(1, len(parts))) if f)
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for module in segflow_imports(current):
            parts = module.split(".")
            todo.extend(f for f in (_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)) if f)
    return seen


def _part(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "config":
        return "shared"  # params.yaml's sections: a package only to keep modules short
    return parts[1] if len(parts) > 1 and (SRC / "segflow" / parts[1]).is_dir() else "shared"


def _allowed(importer: str, imported: str) -> bool:
    part, target = _part(importer), _part(imported)
    if part == target and part != "shared":
        return True
    rules = ALLOWED[part]
    return imported in rules or target in rules or imported.startswith("segflow.config")


MODULES = sorted((SRC / "segflow").rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_run_downward_only(path):
    importer = _module_name(path)
    if importer == "segflow.cli" or importer == "segflow.stage":
        return  # the command line and the stage runner sit above every part
    wrong = sorted(m for m in segflow_imports(path) if not _allowed(importer, m))
    assert not wrong, f"{importer} ({_part(importer)}) may not import {wrong}: see the package docstrings"


def test_the_rules_catch_a_wrong_import(tmp_path):
    assert not _allowed("segflow.data.fetch", "segflow.training.train")
    assert not _allowed("segflow.inference.segment", "segflow.data.preprocess")
    assert not _allowed("segflow.registry.pyfunc", "segflow.serving.app")
    assert not _allowed("segflow.predict.batch", "segflow.serving.app")
    assert not _allowed("segflow.runtime.source", "segflow.serving.app")
    assert not _allowed("segflow.runtime.predictor", "segflow.export.export")
    assert not _allowed("segflow.data.preprocess", "segflow.runtime.source")
    assert _allowed("segflow.training.train", "segflow.registry.register")


def test_the_parts_stack_in_floors():
    """No part may reach itself through what it may import: the rules are an order."""
    parts = {part: {p for p in rules if p in ALLOWED} for part, rules in ALLOWED.items()}
    for part in parts:
        reach, todo = set(), list(parts[part])
        while todo:
            if (current := todo.pop()) not in reach:
                reach.add(current)
                todo.extend(parts[current])
        assert part not in reach, f"{part} may import itself through {sorted(reach)}: the rules form a cycle"


def test_the_predict_stage_runs_no_web_code():
    files = {str(f.relative_to(SRC)) for f in closure(ROOT / "pipeline" / "predict.py") if SRC in f.parents}
    web = sorted(f for f in files if f.startswith(("segflow/serving/", "segflow/export/")))
    assert not web, f"pipeline/predict.py runs {web}: predict loads models through segflow.runtime"
    assert "segflow/runtime/predictor.py" in files and "segflow/data/trace.py" in files


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_dvc_deps_cover_every_file_the_stage_runs(stage):
    spec = _stages()[stage]
    spec = spec.get("do", spec)  # a foreach stage (predict): its template
    script = ROOT / spec["cmd"].split()[1]
    deps = [ROOT / dep for dep in spec["deps"]]
    runs = closure(script)
    missing = sorted(str(f.relative_to(ROOT)) for f in runs if not any(f == d or d in f.parents for d in deps))
    assert not missing, f"dvc.yaml stage {stage} runs {missing} but does not list them (or a folder of them) in deps"


def test_the_closure_follows_lazy_and_from_imports(tmp_path):
    files = {str(f.relative_to(SRC)) for f in closure(SRC / "segflow" / "registry" / "pyfunc.py")}
    assert "segflow/inference/segment.py" in files and "segflow/inference/__init__.py" in files
    assert "segflow/data/preprocess.py" not in files


def test_the_registered_model_carries_its_import_closure_and_nothing_else():
    shipped = [SRC / relative for relative in CODE]
    runs = closure(SRC / "segflow" / "registry" / "pyfunc.py")
    missing = sorted(str(f.relative_to(SRC)) for f in runs if not any(f == s or s in f.parents for s in shipped))
    assert not missing, f"the pyfunc imports {missing}, which register.CODE does not ship"
    unused = [str(s.relative_to(SRC)) for s in shipped if not any(f == s or s in f.parents for f in runs)]
    assert not unused, f"register.CODE ships {unused}, which the pyfunc does not import"


#: "Modules of 50-300 lines" (STYLE.md), as the formatter lays them out; the slack lets a
#: module grow a little before it must be split (cli and serving.app are near).
MAX_LINES = 350


def test_no_module_is_over_the_line_limit():
    long = {str(p.relative_to(SRC)): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules by concern: {long}"


#: "Functions a reader can hold in their head" (issue 23): the longest function, docstring included.
MAX_FUNCTION_LINES = 60


def test_no_function_is_over_the_line_limit():
    long = {
        f"{p.relative_to(SRC)}:{node.lineno} {node.name}": node.end_lineno - node.lineno + 1
        for p in MODULES
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno >= MAX_FUNCTION_LINES
    }
    assert not long, f"split these functions: {long}"


def test_the_readme_layout_table_matches_the_tree_and_the_rules():
    section = (ROOT / "README.md").read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    table = {name.strip().strip("`/"): imports for name, _owns, imports in rows}
    parts = {p.name for p in (SRC / "segflow").iterdir() if (p / "__init__.py").is_file()} - {"config"}
    assert set(table) == parts, "README's layout table: one row per subpackage of src/segflow (config is shared)"
    for part, imports in table.items():
        named = set(re.findall(r"\w+", imports)) & parts
        assert named == ALLOWED[part] - SHARED, f"README's layout table, {part}'s imports: {imports}"
