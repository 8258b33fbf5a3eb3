"""The package's rooms import only from the rooms below them (the development guide's Layout)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sklearn_imgpair"

# Top to bottom, as drawn in docs/user_guide/development.md. A room may import from any room
# after it in this list, never from itself upwards. The public facades (__init__.py, onnx.py)
# re-export names and stand outside the order.
ROOMS = ["__main__", "_cli", "_duplicates", "_neighbors", "_pair_features", "_embedder",
         "_scale", "_classifier", "_deploy", "_persistence", "_training", "_nn", "_matching",
         "datasets", "_images", "_io", "_search", "metrics", "_optional", "_version"]
FACADES = {"__init__", "onnx"}


def _room(module):
    """The room of ``sklearn_imgpair.<room>[.<module>]``."""
    return module.split(".")[1]


def _imports_of_the_package(path):
    """Modules of the package that ``path`` imports, at any depth of its code."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if "." in node.module else [
                f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        yield from (name for name in names if name.startswith("sklearn_imgpair."))


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        room = relative.parts[0].removesuffix(".py")
        if room not in FACADES:
            yield pytest.param(path, room, id=str(relative))


def test_every_room_has_its_place_in_the_order():
    rooms = {path.relative_to(PACKAGE).parts[0].removesuffix(".py")
             for path in PACKAGE.rglob("*.py")}
    assert rooms - FACADES == set(ROOMS)


@pytest.mark.parametrize("path, room", _modules())
def test_a_room_imports_only_from_the_rooms_below_it(path, room):
    upward = sorted({module for module in _imports_of_the_package(path)
                     if _room(module) in ROOMS and _room(module) != room
                     and ROOMS.index(_room(module)) < ROOMS.index(room)})
    assert not upward, f"{path.name} in {room} imports from rooms above it: {upward}"
