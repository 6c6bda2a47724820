"""The architecture as the tree shows it: imports point from the faces to flows to tasks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module of ``package`` and the absolute module names it imports (anywhere in it)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[path.relative_to(REPO).as_posix()] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("tasks", ("flows", "ragcycle.cli")), ("flows", ("ragcycle.cli",))],
)
def test_imports_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = {
        module: sorted(n for n in names for f in forbidden if n == f or n.startswith(f + "."))
        for module, names in imported_modules(package).items()
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_no_room_holds_more_than_one_concept_by_size() -> None:
    """A module over ~450 lines has become a drawer of several concepts (the house rule)."""
    sizes = {
        path.relative_to(REPO).as_posix(): len(path.read_text().splitlines())
        for package in ("tasks", "flows", "ragcycle")
        for path in (REPO / package).rglob("*.py")
    }
    assert {name: lines for name, lines in sizes.items() if lines > 450} == {}


def declared_names(path: Path) -> set[str] | None:
    """A module's ``__all__``, or None when it declares none."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return None


def test_what_other_modules_import_is_declared_in_all() -> None:
    """``__all__`` says what a module offers: every name another module (or a test, bench or
    script) imports from one of ours is in it."""
    ours = {
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
        for package in ("tasks", "flows", "ragcycle")
        for path in (REPO / package).rglob("*.py")
    }
    wanted: dict[str, set[str]] = {}
    for folder in ("tasks", "flows", "ragcycle", "tests", "bench", "scripts"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.level == 0
                    and node.module in ours
                    and ours[node.module] != path
                ):
                    wanted.setdefault(node.module, set()).update(a.name for a in node.names)
    undeclared = {
        module: sorted(names - declared)
        for module, names in wanted.items()
        if (declared := declared_names(ours[module])) is not None and names - declared
    }
    assert undeclared == {}
