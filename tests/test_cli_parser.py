"""The ``sklearn-imgpair`` parser: one dialect, ``--version``, and help without torch."""

import json
import subprocess
import sys

import pytest

from sklearn_imgpair import __version__
from sklearn_imgpair._cli.parser import PROG, build_parser, main

COMMANDS = ["demo", "fit", "evaluate", "predict", "embed", "search", "dedup", "export"]


def test_help_of_every_command_imports_no_heavy_module():
    # A fresh interpreter: this one has imported torch already.
    code = f"""
import contextlib, io, json, sys
from sklearn_imgpair._cli.parser import main
for argv in [["--help"], ["--version"]] + [[name, "--help"] for name in {COMMANDS!r}]:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0, argv
heavy = ("torch", "timm", "skorch", "sklearn", "numpy", "pandas", "sklearn_imgpair._classifier")
print(json.dumps(sorted(name for name in heavy if name in sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert json.loads(result.stdout) == []


def test_python_dash_m_help_imports_no_torch():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "sklearn_imgpair",
                             "search", "--help"], capture_output=True, text=True, check=True,
                            timeout=60)
    assert "--n-neighbors" in result.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "sklearn_imgpair._cli.parser" in imported
    assert not [name for name in imported if name.split(".")[0] in ("torch", "timm", "skorch")]


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"{PROG} {__version__}\n"


def test_help_shows_the_search_example_on_two_intact_lines(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert ("  sklearn-imgpair search --model model.safetensors --gallery catalogue/ "
            "--query photos/ \\\n      --n-neighbors 10 --output results.csv "
            "--plot results.png\n") in out
    # Every example line but a continuation starts with the program.
    examples = out.split("examples:\n", 1)[1].splitlines()
    assert all(line.startswith(f"  {PROG} ") or line.startswith("      ") for line in examples)


@pytest.mark.parametrize("command, new, old, value, dest", [
    (["search", "--model", "m", "--gallery", "g", "--query", "q", "--output", "o.csv"],
     "--n-neighbors", "--k", "3", "n_neighbors"),
    (["fit", "--train", "t.csv", "--model", "m"], "--random-state", "--seed", "7",
     "random_state"),
    (["demo"], "--random-state", "--seed", "7", "random_state"),
])
def test_old_option_names_still_work_and_warn(command, new, old, value, dest, capsys):
    parser = build_parser()
    args = parser.parse_args([*command, new, value])
    assert getattr(args, dest) == int(value) and capsys.readouterr().err == ""
    args = parser.parse_args([*command, old, value])
    assert getattr(args, dest) == int(value)
    assert capsys.readouterr().err == (f"{PROG}: warning: {old} is deprecated and will be "
                                       f"removed in the next release; use {new}.\n")
    default = parser.parse_args(command)
    assert getattr(default, dest) == (10 if dest == "n_neighbors" else 0)


def test_an_old_option_name_is_checked_as_the_new_one(capsys):
    assert main(["search", "--model", "m", "--gallery", "g", "--query", "q", "--output",
                 "o.csv", "--k", "0"]) == 2
    assert "argument --k: must be a positive, finite number; got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("name, option", [("search", "--n-neighbors"), ("dedup", "--n-neighbors"),
                                          ("fit", "--random-state"), ("demo", "--random-state")])
def test_every_command_speaks_the_same_option_names(name, option, capsys):
    assert main([name, "--help"]) == 0
    assert option in capsys.readouterr().out

