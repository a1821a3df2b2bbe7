"""Every DVC stage lists, among its deps, each library file its notebook (or module) imports, directly or
through other library modules: editing one reruns the stages that use it, and only those."""

import ast
import re
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The file of module ``sml.a.b`` (a package's ``__init__.py``), or None for a name inside a module."""
    path = SRC.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported(source: str, package: str = "") -> set[str]:
    """The sml modules a piece of code imports (``from sml.x import y`` counts ``sml.x.y`` if it is one);
    relative imports are resolved against ``package``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("sml")}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module.startswith("sml"):
                names.add(module)
                names |= {f"{module}.{a.name}" for a in node.names}
    return {n for n in names if module_file(n)}


def closure(names: set[str]) -> set[Path]:
    files, todo = set(), list(names)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing sml.a.b runs sml/__init__ and sml/a/__init__ too
            path = module_file(".".join(parts[:i]))
            if path and path not in files:
                files.add(path)
                package = ".".join(parts[:i] if path.name == "__init__.py" else parts[:i - 1])
                todo.extend(imported(path.read_text(), package))
    return files


def entry_source(cmd: str) -> str:
    notebook = re.search(r"papermill (\S+\.ipynb)", cmd)
    if notebook:
        cells = nbformat.read(REPO / notebook.group(1), as_version=4).cells
        return "\n".join(c.source for c in cells if c.cell_type == "code")
    module = re.search(r"python -m (sml[\w.]+)", cmd).group(1)
    return f"import {module}"


@pytest.mark.parametrize("name", STAGES)
def test_stage_deps_cover_the_code_it_imports(name):
    stage = STAGES[name]
    deps = [REPO / d for d in stage["deps"]]
    needed = closure(imported(entry_source(stage["cmd"])))
    assert needed, f"stage {name}: imports nothing from sml?"
    missing = sorted(str(f.relative_to(REPO)) for f in needed
                     if f.name != "__init__.py" or f.parent != SRC / "sml"  # the package marker holds no code
                     if not any(f == d or d in f.parents for d in deps))
    assert not missing, f"stage {name}: add to its deps in dvc.yaml: {missing}"
