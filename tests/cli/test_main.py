import contextlib
import io
import os
import shlex
import warnings

import numpy as np
import pandas as pd
import pytest

from sklearn_imgpair import ImagePairClassifier
from sklearn_imgpair.__main__ import main

from conftest import go_offline

# Seconds of fitting for the demo, and for the fit command it suggests.
TIME_LIMIT = "6"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``(folder, stdout)`` of one offline demo run; read only."""
    folder = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as monkeypatch:
        go_offline(monkeypatch)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["demo", "--output", str(folder), "--time-limit", TIME_LIMIT]) == 0
    return folder, out.getvalue()


def _suggested_commands(out):
    """The folder that the demo's output says to ``cd`` to, and the commands it suggests."""
    lines = [shlex.split(line) for line in out.splitlines()
             if line.lstrip().startswith(("cd ", "sklearn-imgpair "))]
    assert [line[0] for line in lines[:2]] == ["cd", "sklearn-imgpair"]
    (_, folder), *commands = lines
    return folder, [command[1:] for command in commands]


def test_demo_runs_offline_and_saves_a_working_model(demo):
    folder, out = demo
    assert "ROC AUC" in out and "P(match)" in out
    assert "embeddings of the test pairs' first images: shape (" in out
    model_path = folder / "model.safetensors"
    assert f"ImagePairClassifier.load({str(model_path)!r})" in out
    clf = ImagePairClassifier.load(model_path)
    images = sorted(os.listdir(folder / "images"))
    pair = np.array([[str(folder / "images" / images[0])] * 2], dtype=object)
    assert clf.predict_proba(pair).shape == (1, 2)


def test_demo_writes_the_pairs_csvs_it_names(demo):
    folder, out = demo
    for name in ("train.csv", "test.csv"):
        assert str(folder / name) in out
        pairs = pd.read_csv(folder / name)
        assert list(pairs.columns) == ["Image1", "Image2", "Label"]
        # Relative to the CSV's folder, so that the demo's folder can move.
        assert all((folder / path).is_file() for path in pairs["Image1"])


def test_every_command_the_demo_suggests_runs_as_printed(demo, monkeypatch, capsys):
    folder, out = demo
    working_folder, commands = _suggested_commands(out)
    assert working_folder == str(folder)
    assert [command[0] for command in commands] == ["evaluate", "predict", "embed", "search",
                                                    "fit"]
    go_offline(monkeypatch)
    monkeypatch.chdir(working_folder)
    for command in commands:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(command) == 0, command
        assert [str(warning.message) for warning in caught] == [], command
        assert "warning" not in capsys.readouterr().err, command
    for name in ("predictions.csv", "embeddings.npy", "results.csv",
                 "model_from_shell.safetensors"):
        assert (folder / name).is_file(), name
    # The fit suggestion trains the demo's small Swin within the demo's time limit.
    shell_clf = ImagePairClassifier.load(folder / "model_from_shell.safetensors")
    assert shell_clf.image_size_ == 64 and not shell_clf.pretrained
    assert shell_clf.time_limit == float(TIME_LIMIT)


def test_demo_help_lists_device_and_precision(capsys):
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--device DEVICE" in out and "--precision {auto,fp32,bf16,fp16}" in out


class _Stop(Exception):
    """Stops the demo at its fit: the test looks at the classifier, trains nothing."""


@pytest.mark.filterwarnings("ignore:precision='bf16'")  # emulated on CPUs without bfloat16
@pytest.mark.parametrize("options, expected", [
    (["--device", "cpu", "--precision", "bf16"], ("cpu", "bf16")),
    ([], ("auto", "auto")),
])
def test_demo_fits_its_classifier_on_device_and_precision(options, expected, tmp_path,
                                                          monkeypatch):
    from sklearn_imgpair._cli import demo
    from sklearn_imgpair._cli.parser import build_parser

    pairs = pd.DataFrame({"Image1": [str(tmp_path / "a.png")], "Image2": [str(tmp_path / "b.png")],
                          "Label": [1]})
    monkeypatch.setattr(demo, "make_image_pairs", lambda *args, **kwargs: (pairs, pairs))
    fitted = []

    def fit(self, X, y=None, **fit_params):
        fitted.append((self.get_params()["device"], self.get_params()["precision"]))
        raise _Stop

    monkeypatch.setattr(ImagePairClassifier, "fit", fit)
    args = build_parser().parse_args(["demo", "--output", str(tmp_path), *options])
    with pytest.raises(_Stop):
        demo.run_demo(args)
    assert fitted == [expected]


def test_demo_refuses_a_precision_its_device_cannot_do_before_any_work(tmp_path, capsys):
    output = tmp_path / "demo"
    assert main(["demo", "--output", str(output), "--device", "cpu", "--precision",
                 "fp16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--precision fp16: precision='fp16' needs a CUDA" in err
    assert not output.exists()
