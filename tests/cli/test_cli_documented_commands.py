"""Every ``sklearn-imgpair`` command shown in the README and the user guide parses as written."""

import importlib
import inspect
import pathlib
import re
import shlex

import pytest

from sklearn_imgpair._cli.parser import PROG, build_parser

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "user_guide").glob("*.md"))]
_BLOCK = re.compile(r"^```(?:bash|console|shell|sh)\n(.*?)^```", re.S | re.M)


def _commands(page):
    """The ``sklearn-imgpair ...`` command lines of a page's shell blocks, continuations joined."""
    for block in _BLOCK.findall(page.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(f"{PROG} "):
                yield line


COMMANDS = [pytest.param(line, id=f"{page.name}:{line[len(PROG) + 1:][:60]}")
            for page in PAGES for line in _commands(page)]


def test_the_pages_show_every_catalogue_command():
    shown = {shlex.split(line.values[0])[1] for line in COMMANDS}
    assert {"index", "search", "dedup", "embed", "fit", "evaluate", "predict", "export"} <= shown


@pytest.mark.parametrize("line", COMMANDS)
def test_documented_command_parses_without_deprecated_options(line, capsys):
    args = build_parser().parse_args(shlex.split(line)[1:])
    module, function = args.run.split(":")  # as main runs it
    assert inspect.isfunction(getattr(importlib.import_module(f"sklearn_imgpair._cli.{module}"),
                                      function, None)), args.run
    assert "deprecated" not in capsys.readouterr().err
