"""The layout's one rule: imports run one way, down the layers; no package reaches up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "consumer"
#: Lowest first. A module may import its own layer and the layers before it, never after.
LAYERS = (
    ("errors", "settings", "logs"),
    ("exposition",),
    ("usage",),
    ("keys",),
    ("kafka",),
    ("pipeline",),
    ("web",),
    ("app",),
    ("devtools",),
    ("cli", "__main__", "__init__"),
)


def _layer(part: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if part in names)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = node.module
            if module == "consumer":  # from consumer import devtools, kafka ...
                found.update(f"consumer.{alias.name}" for alias in node.names)
            elif module.startswith("consumer."):
                found.add(module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("consumer."))
    return found


MODULES = sorted(p for p in ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_imports_run_down_the_layers(path: Path) -> None:
    own = path.relative_to(ROOT).with_suffix("").parts[0]
    for module in _imports(path):
        target = module.split(".")[1]
        assert _layer(target) <= _layer(own), f"{path.name} ({own}) imports {module}"


def test_every_module_is_in_a_layer_and_every_package_says_what_it_is_for() -> None:
    for path in MODULES:
        _layer(path.relative_to(ROOT).with_suffix("").parts[0])
    for package in (p for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc, f"{package.name}/__init__.py has no purpose line"
        assert len(doc.splitlines()) == 1, f"{package.name}: one line, please"
