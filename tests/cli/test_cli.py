import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from sklearn.metrics import roc_auc_score

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier
from sklearn_imgpair.__main__ import main
from sklearn_imgpair._cli import commands
from sklearn_imgpair._cli import main as _cli
from sklearn_imgpair._cli.inputs import list_image_files
from sklearn_imgpair._images.batch_size import inference_batch_size
from sklearn_imgpair.datasets import make_image_pairs

from conftest import TINY_IMAGE_SIZE, TINY_SWIN

TINY_FIT = ["--no-pretrained", "--image-size", str(TINY_IMAGE_SIZE),
            "--model-kwargs", json.dumps(TINY_SWIN), "--max-epochs", "2", "--lr", "3e-3",
            "--batch-size", "16", "--random-state", "0", "--quiet"]


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    """train.csv and test.csv with image paths relative to their folder; read only."""
    folder = tmp_path_factory.mktemp("csv")
    train, test = make_image_pairs(folder / "images", n_products=8, n_views=3,
                                   image_size=TINY_IMAGE_SIZE, n_pairs=60, random_state=0)
    for name, frame in (("train", train), ("test", test)):
        frame = frame.copy()
        for column in ("Image1", "Image2"):
            frame[column] = [os.path.relpath(path, folder) for path in frame[column]]
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def model_path(csv_dir, tmp_path_factory):
    """A model fitted once through the command line; tests must not overwrite it."""
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    assert main(["fit", "--train", str(csv_dir / "train.csv"), "--model", str(path),
                 *TINY_FIT]) == 0
    return path


@pytest.fixture(scope="module")
def model(model_path):
    return ImagePairClassifier.load(model_path)


def _test_pairs(csv_dir, name="test.csv"):
    """A table of ``csv_dir`` with absolute image paths."""
    frame = pd.read_csv(csv_dir / name)
    for column in ("Image1", "Image2"):
        frame[column] = [str(csv_dir / path) for path in frame[column]]
    return frame


def _write_csv(frame, tmp_path, name):
    """Write ``frame`` to ``tmp_path/data/name``; outputs of a test go elsewhere."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    frame.to_csv(folder / name, index=False)
    return folder / name


def _copy_test_set(csv_dir, tmp_path):
    """test.csv with copies of its images: new files, not in the embedding cache."""
    frame = pd.read_csv(csv_dir / "test.csv")
    shutil.copytree(csv_dir / "images", tmp_path / "data" / "images")
    return _write_csv(frame, tmp_path, "test.csv")


def _assert_one_line_error(capsys, *fragments):
    """Check that stderr is one error line holding ``fragments``; return what was captured."""
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("sklearn-imgpair: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return captured


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_fit_saves_a_fitted_classifier(model, model_path):
    assert isinstance(model, ImagePairClassifier)
    assert model.classes_.tolist() == [0, 1] and model.match_label == 1
    assert model.pair_mining == "graph"
    assert "identity_loss" in model.history[-1, "batches", 0]
    assert len(model.history) == 2 and model.image_size_ == TINY_IMAGE_SIZE  # --max-epochs 2
    assert os.listdir(model_path.parent) == ["model.safetensors"]  # no temporary file left
    assert _mode(model_path) == 0o666 & ~_umask()


def test_outputs_get_the_mode_the_umask_gives(model_path, csv_dir, tmp_path):
    output = tmp_path / "out" / "predictions.csv"
    previous = os.umask(0o027)
    try:
        assert main(["predict", "--model", str(model_path), "--data",
                     str(csv_dir / "test.csv"), "--output", str(output), "--quiet"]) == 0
    finally:
        os.umask(previous)
    assert _mode(output) == 0o640


def test_fit_takes_column_names_and_a_string_match_label(csv_dir, tmp_path, capsys):
    frame = _test_pairs(csv_dir, "train.csv").rename(
        columns={"Image1": "query", "Image2": "response", "Label": "same"})
    frame["same"] = frame["same"].map({1: "yes", 0: "no"})
    data = _write_csv(frame, tmp_path, "renamed.csv")
    path = tmp_path / "sub" / "renamed.safetensors"
    assert main(["fit", "--train", str(data), "--model", str(path),
                 "--image1", "query", "--image2", "response", "--label", "same",
                 "--match-label", "yes", *TINY_FIT, "--max-epochs", "1",
                 "--pair-mining", "none", "--colour-share", "0.4"]) == 0
    assert f"Saved the model to {path}" in capsys.readouterr().out
    clf = ImagePairClassifier.load(path)
    assert clf.classes_.tolist() == ["no", "yes"] and clf.match_label == "yes"
    assert clf.module_.colour_share == 0.4
    assert clf.embedding_dim_ == clf.module_.backbone.num_features + 512
    assert len(clf.history) == 1 and clf.pair_mining == "none"
    assert "identity_loss" not in clf.history[-1, "batches", 0]


def test_evaluate_prints_roc_auc_and_accuracy(model_path, model, csv_dir, capsys):
    assert main(["evaluate", "--model", str(model_path), "--data",
                 str(csv_dir / "test.csv"), "--threshold", "0.4"]) == 0
    out = capsys.readouterr().out
    test = _test_pairs(csv_dir)
    match = model.predict_proba(test[["Image1", "Image2"]])[:, 1]
    assert f"ROC AUC   {roc_auc_score(test['Label'], match):.4f}" in out
    accuracy = ((match > 0.4).astype(int) == test["Label"]).mean()
    assert f"accuracy  {accuracy:.4f} at threshold 0.4" in out
    assert f"pairs     {len(test)} ({int(test['Label'].sum())} matching)" in out


def test_evaluate_rejects_labels_the_model_does_not_know(model_path, csv_dir, tmp_path,
                                                         capsys):
    frame = _test_pairs(csv_dir)
    frame["Label"] = frame["Label"].map({1: "yes", 0: 0})
    data = _write_csv(frame, tmp_path, "other_labels.csv")
    assert main(["evaluate", "--model", str(model_path), "--data", str(data)]) == 2
    _assert_one_line_error(capsys, f"{data}, column 'Label' holds labels ['yes']",
                           "its labels: ['0', '1']")


@pytest.mark.parametrize("threshold", [None, "0.0"])
def test_predict_writes_input_columns_predictions_and_probabilities(
        model_path, model, csv_dir, tmp_path, threshold):
    output = tmp_path / "predictions.csv"
    options = [] if threshold is None else ["--threshold", threshold]
    assert main(["predict", "--model", str(model_path), "--data", str(csv_dir / "test.csv"),
                 "--output", str(output), "--proba", *options]) == 0
    written = pd.read_csv(output)
    test = _test_pairs(csv_dir)
    assert list(written.columns) == ["Image1", "Image2", "Label", "prediction", "probability",
                                     "proba_0", "proba_1"]
    pd.testing.assert_frame_equal(written[["Image1", "Image2", "Label"]], test)
    proba = model.predict_proba(test[["Image1", "Image2"]])
    assert_allclose(written["probability"], proba[:, 1], rtol=1e-5)
    assert_allclose(written[["proba_0", "proba_1"]], proba, rtol=1e-5)
    if threshold is None:
        assert written["prediction"].tolist() == model.predict(test[["Image1", "Image2"]]).tolist()
    else:
        assert (written["prediction"] == 1).all()


def _read_embeddings(output):
    if output.suffix == ".npy":
        paths = output.with_suffix(".paths.txt").read_text().splitlines()
        return paths, np.load(output)
    table = pd.read_csv(output)
    assert table.columns[1] == "e0"
    return table["path"].tolist(), table.drop(columns="path").to_numpy()


@pytest.mark.parametrize("extension", [".npy", ".csv"])
def test_embed_writes_one_vector_per_distinct_image(model_path, model, csv_dir, tmp_path,
                                                    extension, capsys):
    output = tmp_path / f"embeddings{extension}"
    assert main(["embed", "--model", str(model_path), "--images", str(csv_dir / "test.csv"),
                 "--output", str(output)]) == 0
    paths, vectors = _read_embeddings(output)
    test = _test_pairs(csv_dir)
    # Distinct, first-seen order: the first column, then the new images of the second.
    assert paths == list(dict.fromkeys([*test["Image1"], *test["Image2"]]))
    expected = ImageEmbedder(classifier=model).fit().transform(paths)
    assert vectors.shape == (len(paths), model.embedding_dim_)
    assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    assert f"Wrote {len(paths)} embeddings of length {model.embedding_dim_}" in (
        capsys.readouterr().out)


def test_embed_reads_one_image_column_as_search_and_dedup_do(model_path, model, csv_dir,
                                                              tmp_path, capsys):
    test = _test_pairs(csv_dir)
    images = pd.DataFrame({"image": [*test["Image2"], *test["Image1"]]})
    data = _write_csv(images, tmp_path, "images.csv")  # one column, not Image1/Image2
    output = tmp_path / "out" / "embeddings.npy"
    command = ["embed", "--model", str(model_path), "--images", str(data), "--output",
               str(output)]
    assert main(command) == 0
    paths, vectors = _read_embeddings(output)
    assert paths == list(dict.fromkeys(images["image"]))  # distinct, in the file's order
    assert_allclose(vectors, ImageEmbedder(classifier=model).fit().transform(paths),
                    rtol=1e-5, atol=1e-6)
    assert capsys.readouterr().err == ""
    # A pairs CSV: one column with --image-column, as search and dedup.
    pairs = _test_pairs(csv_dir).rename(columns={"Image1": "query", "Image2": "response"})
    data = _write_csv(pairs, tmp_path, "renamed.csv")
    command[command.index("--images") + 1] = str(data)
    assert main([*command, "--image-column", "response"]) == 0
    assert _read_embeddings(output)[0] == list(dict.fromkeys(pairs["response"]))
    assert main(command) == 2  # three columns, none named
    _assert_one_line_error(capsys, f"--images '{data}' has 3 columns ['query', 'response', "
                                   "'Label']; name the column of image paths with "
                                   "--image-column")


def test_embed_old_data_and_image_columns_still_work_and_warn(model_path, csv_dir, tmp_path,
                                                              capsys):
    frame = _test_pairs(csv_dir).rename(columns={"Image1": "query", "Image2": "response"})
    data = _write_csv(frame, tmp_path, "renamed.csv")
    output = tmp_path / "out" / "embeddings.npy"
    command = ["embed", "--model", str(model_path), "--data", str(data), "--output",
               str(output), "--image1", "query", "--image2", "response"]
    assert main(command) == 0
    paths, _ = _read_embeddings(output)
    assert paths == list(dict.fromkeys([*frame["query"], *frame["response"]]))
    assert capsys.readouterr().err.splitlines() == [
        f"sklearn-imgpair: warning: {old} is deprecated and will be removed in the next "
        f"release; use {new}." for old, new in [("--data", "--images"),
                                                ("--image1", "--image-column"),
                                                ("--image2", "--image-column")]]
    # One column alone: name it twice, as before.
    assert main([*command[:-1], "query"]) == 0
    paths, vectors = _read_embeddings(output)
    assert paths == list(dict.fromkeys(frame["query"])) and len(vectors) == len(paths)
    capsys.readouterr()
    assert main([*command, "--image-column", "query"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sklearn-imgpair: error: give --image-column, or the deprecated --image1 and --image2, "
        "not both.")
    assert main([*command[:3], "--images", str(data), *command[3:]]) == 2
    assert "argument --data: not allowed with argument --images" in capsys.readouterr().err


def test_embed_takes_a_folder_of_images(model_path, model, csv_dir, tmp_path, capsys):
    output = tmp_path / "embeddings.csv"
    assert main(["embed", "--model", str(model_path), "--images", str(csv_dir / "images"),
                 "--output", str(output)]) == 0
    paths, vectors = _read_embeddings(output)
    assert paths == list_image_files(csv_dir / "images")  # every image, sorted
    expected = ImageEmbedder(classifier=model).fit().transform(paths)
    assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["embed", "--model", str(model_path), "--images", str(empty), "--output",
                 str(output)]) == 2
    _assert_one_line_error(capsys, f"--images folder '{empty}' holds no image file")


@pytest.mark.parametrize("name, output", [("evaluate", None), ("predict", "out.csv"),
                                          ("embed", "out.npy")])
def test_batch_size_overrides_the_models(name, output, model_path, model, csv_dir, tmp_path,
                                         batch_sizes, capsys):
    data = _copy_test_set(csv_dir, tmp_path)
    command = [name, "--model", str(model_path), "--images" if name == "embed" else "--data",
               str(data), "--batch-size", "5"]
    if output is not None:
        command += ["--output", str(tmp_path / output)]
    assert main(command) == 0
    assert batch_sizes and set(batch_sizes) == {5} and model.batch_size == 16
    if name == "predict":
        written = pd.read_csv(tmp_path / output)
        expected = model.predict_proba(written[["Image1", "Image2"]])[:, 1]
        assert_allclose(written["probability"], expected, rtol=1e-5)


@pytest.mark.parametrize("name, output", [("evaluate", None), ("predict", "out.csv"),
                                          ("embed", "out.npy")])
def test_the_default_batch_size_is_chosen_for_the_device(name, output, model_path, csv_dir,
                                                         tmp_path, batch_sizes):
    data = _copy_test_set(csv_dir, tmp_path)
    command = [name, "--model", str(model_path), "--images" if name == "embed" else "--data",
               str(data)]
    if output is not None:
        command += ["--output", str(tmp_path / output)]
    assert main(command) == 0
    # Images per forward pass, not the model's training batch of 16 pairs.
    assert batch_sizes and set(batch_sizes) == {inference_batch_size("cpu", TINY_IMAGE_SIZE)}


def _command(name, model_path, data, tmp_path):
    if name == "fit":
        return ["fit", "--train", str(data), "--model", str(tmp_path / "out" / "m.safetensors"),
                *TINY_FIT]
    output = {"predict": ["--output", str(tmp_path / "out" / "out.csv")],
              "embed": ["--output", str(tmp_path / "out" / "out.npy")], "evaluate": []}[name]
    return [name, "--model", str(model_path), "--images" if name == "embed" else "--data",
            str(data), *output]


COMMANDS = ["fit", "evaluate", "predict", "embed"]


@pytest.mark.parametrize("name", COMMANDS)
def test_a_missing_image_fails_with_one_line_naming_line_column_and_path(
        name, model_path, csv_dir, tmp_path, capsys):
    frame = _test_pairs(csv_dir)
    frame.loc[2, "Image1"] = "images/lost.png"
    data = _write_csv(frame, tmp_path, "lost.csv")
    assert main(_command(name, model_path, data, tmp_path)) == 2
    _assert_one_line_error(capsys, f"{data}, line 4, column 'Image1'",
                           f"'{tmp_path / 'data' / 'images' / 'lost.png'}' does not exist")
    assert not (tmp_path / "out").exists()  # no model, no output


@pytest.mark.parametrize("name", COMMANDS)
def test_a_corrupt_image_fails_with_one_line_naming_line_column_and_path(
        name, model_path, csv_dir, tmp_path, capsys):
    frame = _test_pairs(csv_dir)
    if name == "fit":
        frame = _test_pairs(csv_dir, "train.csv")
    broken = tmp_path / "data" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG not really")
    frame.loc[1, "Image2"] = "broken.png"
    data = _write_csv(frame, tmp_path, "broken.csv")
    assert main(_command(name, model_path, data, tmp_path)) == 2
    _assert_one_line_error(capsys, f"{data}, line 3, column 'Image2'",
                           f"Cannot read image '{broken}'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", COMMANDS)
def test_a_missing_column_fails_with_one_line_naming_it(name, model_path, csv_dir, tmp_path,
                                                        capsys):
    frame = _test_pairs(csv_dir).drop(columns="Image2")
    data = _write_csv(frame, tmp_path, "one_image.csv")
    assert main(_command(name, model_path, data, tmp_path)) == 2
    if name == "embed":  # images, not pairs: neither one column nor a pair
        _assert_one_line_error(capsys, "has 2 columns ['Image1', 'Label']; name the column of "
                                       "image paths with --image-column")
    else:
        _assert_one_line_error(capsys, "no column 'Image2'", "['Image1', 'Label']")


@pytest.mark.parametrize("name", ["fit", "evaluate"])
def test_a_missing_label_column_fails_with_one_line(name, model_path, csv_dir, tmp_path,
                                                    capsys):
    command = _command(name, model_path, csv_dir / "test.csv", tmp_path) + ["--label", "Match"]
    assert main(command) == 2
    _assert_one_line_error(capsys, "no column 'Match'")


@pytest.mark.parametrize("labels, fragments", [
    ({3: None}, ["line 5, column 'Label': the label is missing (1 rows lack one)"]),
    ({3: 2}, ["column 'Label' must hold two labels", "got 3: ['0', '1', '2']"]),
])
def test_fit_names_the_csv_and_column_of_bad_labels(labels, fragments, csv_dir, tmp_path,
                                                    capsys):
    frame = _test_pairs(csv_dir, "train.csv")
    frame["Label"] = frame["Label"].astype(object)
    for row, label in labels.items():
        frame.loc[row, "Label"] = label
    data = _write_csv(frame, tmp_path, "labels.csv")
    assert main(_command("fit", None, data, tmp_path)) == 2
    _assert_one_line_error(capsys, str(data), *fragments)
    assert not (tmp_path / "out").exists()


def test_fit_with_a_missing_weights_file_or_an_unknown_label_fails(csv_dir, tmp_path, capsys):
    train = str(csv_dir / "train.csv")
    assert main(["fit", "--train", train, "--model", str(tmp_path / "m.safetensors"),
                 "--weights-path", str(tmp_path / "none.pth"), *TINY_FIT]) == 2
    _assert_one_line_error(capsys, "none.pth")
    assert main(["fit", "--train", train, "--model", str(tmp_path / "m.safetensors"),
                 "--match-label", "same", *TINY_FIT]) == 2
    _assert_one_line_error(capsys, f"--match-label 'same' is not one of the labels in {train}, "
                                   "column 'Label': ['0', '1']")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name, option", [("fit", "--model"), ("predict", "--output"),
                                          ("embed", "--output")])
def test_an_output_that_cannot_be_written_fails_before_any_work(name, option, model_path,
                                                                csv_dir, tmp_path, capsys):
    data = csv_dir / ("train.csv" if name == "fit" else "test.csv")
    command = _command(name, model_path, data, tmp_path)
    folder = tmp_path / "folder.npy"
    folder.mkdir()
    command[command.index(option) + 1] = str(folder)
    assert main(command) == 2
    captured = _assert_one_line_error(capsys, f"{option} '{folder}' is a folder")
    assert "Fitting" not in captured.out
    (tmp_path / "file").write_text("")
    command[command.index(option) + 1] = str(tmp_path / "file" / "sub" / "out.npy")
    assert main(command) == 2
    captured = _assert_one_line_error(capsys, f"'{tmp_path / 'file'}' is a file, not a folder")
    assert "Fitting" not in captured.out
    assert sorted(os.listdir(tmp_path)) == ["file", "folder.npy"]


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    (b"not a model", "is not a sklearn-imgpair model file"),
    (pickle.dumps({"a": 1}), "is not a sklearn-imgpair model file"),
])
def test_a_bad_model_file_fails_with_one_line(content, fragment, csv_dir, tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    if content is not None:
        path.write_bytes(content)
    assert main(["evaluate", "--model", str(path), "--data", str(csv_dir / "test.csv")]) == 2
    _assert_one_line_error(capsys, fragment)


def test_an_unreadable_csv_and_bad_options_fail(model_path, tmp_path, capsys):
    broken = tmp_path / "broken.csv"
    broken.write_text('Image1,Image2\n"a.png,b.png\n')
    assert main(["predict", "--model", str(model_path), "--data", str(broken),
                 "--output", str(tmp_path / "out.csv")]) == 2
    _assert_one_line_error(capsys, "Cannot read pairs file")
    assert main(["fit", "--train", str(broken), "--model", "m.safetensors",
                 "--model-kwargs", "{not json"]) == 2
    assert "--model-kwargs: not valid JSON" in capsys.readouterr().err
    assert main(["embed", "--model", str(model_path), "--images", str(broken),
                 "--output", str(tmp_path / "out.txt")]) == 2
    _assert_one_line_error(capsys, "--output must end in .npy or .csv")


@pytest.mark.parametrize("option, value, message", [
    ("--lr", "nan", "must be a positive, finite number; got 'nan'"),
    ("--time-limit", "inf", "must be a positive, finite number; got 'inf'"),
    ("--lr", "-1", "must be a positive, finite number; got '-1'"),
    ("--max-epochs", "2.5", "must be an integer; got '2.5'"),
    ("--colour-share", "1", "must be a number from 0 to below 1; got '1'"),
    ("--colour-share", "-0.1", "must be a number from 0 to below 1; got '-0.1'"),
])
def test_fit_rejects_numbers_out_of_range(option, value, message, capsys):
    assert main(["fit", "--train", "t.csv", "--model", "m.safetensors", option, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {message}" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["nan", "1.5", "abc", "inf"])
def test_threshold_must_be_a_number_from_0_to_1(value, capsys):
    assert main(["predict", "--model", "m.safetensors", "--data", "d.csv", "--output", "o.csv",
                 "--threshold", value]) == 2
    err = capsys.readouterr().err
    assert f"argument --threshold: must be a number from 0 to 1; got '{value}'" in err


BAD_SWIN = json.dumps({**TINY_SWIN, "depths": [1, 1, 1], "num_heads": [1, 2]})


def test_an_unforeseen_error_is_one_line_with_its_type(csv_dir, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.delenv(_cli.TRACEBACK_ENV, raising=False)
    command = ["fit", "--train", str(csv_dir / "train.csv"), "--model",
               str(tmp_path / "m.safetensors"), *TINY_FIT, "--model-kwargs", BAD_SWIN]
    assert main(command) == 1
    err = _assert_one_line_error(capsys, "sklearn-imgpair: error: IndexError: ",
                                 "-v or SKLEARN_IMGPAIR_TRACEBACK=1 shows the traceback").err
    assert main([*command, "-v"]) == 1
    verbose = capsys.readouterr().err
    assert verbose.startswith("Traceback") and verbose.splitlines()[-1] == (
        err.strip().split(" (-v")[0])
    monkeypatch.setenv(_cli.TRACEBACK_ENV, "1")
    assert main(command) == 1
    assert capsys.readouterr().err.startswith("Traceback")


def test_an_interrupt_exits_with_130(model_path, csv_dir, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "run_evaluate", interrupted)
    assert main(["evaluate", "--model", str(model_path), "--data",
                 str(csv_dir / "test.csv")]) == 130
    assert capsys.readouterr().err == "sklearn-imgpair: interrupted\n"


def test_an_interrupt_while_the_command_imports_exits_with_130(monkeypatch, capsys):
    # Ctrl-C while the command's module (and torch) are imported, before it runs.
    def import_module(name, package=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli.importlib, "import_module", import_module)
    assert main(["evaluate", "--model", "m.safetensors", "--data", "test.csv"]) == 130
    assert capsys.readouterr().err == "sklearn-imgpair: interrupted\n"


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "fit", "evaluate", "predict", "embed", "Image1,Image2,Label"):
        assert name in out
    assert main([]) == 2  # a command is required
    capsys.readouterr()
    for name in ("fit", "evaluate", "predict"):
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--image1 COLUMN" in out and "--image2 COLUMN" in out, name
    assert main(["embed", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--images CSV|FOLDER" in out and "--image-column COLUMN" in out
    assert "--image1" not in out and "--data" not in out
    assert main(["predict", "--help"]) == 0
    assert "--threshold" in capsys.readouterr().out


@pytest.mark.slow
def test_python_dash_m_exits_with_status_2_and_no_traceback(model_path, tmp_path):
    data = tmp_path / "lost.csv"
    data.write_text("Image1,Image2\nlost.png,lost.png\n")
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_imgpair", "predict", "--model", str(model_path),
         "--data", str(data), "--output", str(tmp_path / "out.csv")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
        timeout=120)
    assert result.returncode == 2
    assert result.stderr == (f"sklearn-imgpair: error: {data}, line 2, column 'Image1': image "
                             f"'{tmp_path / 'lost.png'}' does not exist.\n")


def test_a_multi_image_cell_is_the_mean_of_its_images(model_path, model, csv_dir, tmp_path,
                                                      capsys):
    frame = _test_pairs(csv_dir)
    frame.loc[1, "Image2"] = f"{frame.loc[0, 'Image1']};{frame.loc[0, 'Image2']}"
    data = _write_csv(frame, tmp_path, "multi.csv")
    output = tmp_path / "out.csv"
    assert main(["predict", "--model", str(model_path), "--data", str(data),
                 "--output", str(output)]) == 0
    expected = model.predict_proba(frame[["Image1", "Image2"]].to_numpy())[:, 1]
    assert_allclose(pd.read_csv(output)["probability"], expected, rtol=1e-5)
    frame.loc[1, "Image2"] += ";lost.png"  # each image of the cell is checked
    data = _write_csv(frame, tmp_path, "lost.csv")
    assert main(["predict", "--model", str(model_path), "--data", str(data),
                 "--output", str(output)]) == 2
    _assert_one_line_error(capsys, "line 3, column 'Image2' (image 3 of 3)", "does not exist")


def test_verbose_shows_a_progress_bar_and_quiet_shows_none(model_path, csv_dir, tmp_path,
                                                           capsys):
    command = ["predict", "--model", str(model_path), "--data", str(csv_dir / "test.csv"),
               "--output", str(tmp_path / "out.csv")]
    assert main([*command, "--verbose"]) == 0
    assert "Predicting" in capsys.readouterr().err
    assert main([*command, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
