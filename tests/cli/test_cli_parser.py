"""The ``sklearn-imgpair`` parser: one dialect, ``--version``, and help without torch."""

import contextlib
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sklearn_imgpair import __version__
from sklearn_imgpair._cli.main import main
from sklearn_imgpair._cli.parser import PROG, build_parser

COMMANDS = ["demo", "fit", "evaluate", "predict", "embed", "index", "search", "dedup", "export"]


def test_help_of_every_command_imports_no_heavy_module():
    # A fresh interpreter: this one has imported torch already.
    code = f"""
import contextlib, io, json, sys
from sklearn_imgpair.__main__ import main
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


@pytest.mark.parametrize("name, old", [("search", "--k"), ("fit", "--seed"), ("demo", "--seed"),
                                       ("embed", "--data"), ("embed", "--image1"),
                                       ("embed", "--image2")])
def test_help_leaves_the_deprecated_option_names_out(name, old, capsys):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"{re.escape(old)}\b", out) is None, out
    assert "deprecated" not in out


def test_embed_takes_images_as_search_and_dedup_do(capsys):
    parser = build_parser()
    command = ["embed", "--model", "m", "--output", "e.npy"]
    args = parser.parse_args([*command, "--images", "catalogue/", "--image-column", "path"])
    assert (args.images, args.image_column) == ("catalogue/", "path")
    assert capsys.readouterr().err == ""
    args = parser.parse_args([*command, "--data", "catalogue/"])
    assert args.images == "catalogue/"
    assert capsys.readouterr().err == (f"{PROG}: warning: --data is deprecated and will be "
                                       "removed in the next release; use --images.\n")
    assert main(command) == 2  # one of the two names is required
    assert "one of the arguments --images is required" in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[2]


def _shell_blocks(text):
    """The ``sklearn-imgpair`` commands of the bash blocks of Markdown ``text``."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith(f"{PROG} "):
                commands.append(shlex.split(line, comments=True)[1:])
    return commands


def _documented_commands():
    """Every command that the README, the user guide, the notebook and ``--help`` show."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    commands = [command for page in pages for command in _shell_blocks(page.read_text())]
    notebook = json.loads((ROOT / "notebooks" / "image_to_image_matching.ipynb").read_text())
    for cell in notebook["cells"]:
        commands += _shell_blocks("".join(cell["source"]))
    for argv in [["--help"]] + [[name, "--help"] for name in COMMANDS]:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            main(argv)
        text = out.getvalue().replace("\\\n", " ")
        commands += [shlex.split(line)[1:] for line in text.splitlines()
                     if line.startswith(f"  {PROG} ")]
    return commands


def test_every_documented_command_parses_in_the_one_dialect(capsys):
    commands = _documented_commands()
    # Each command is shown somewhere, --help's example included.
    assert {command[0] for command in commands} == set(COMMANDS)
    parser = build_parser()
    for command in commands:
        parser.parse_args(command)
        assert capsys.readouterr().err == "", command  # no deprecated option
