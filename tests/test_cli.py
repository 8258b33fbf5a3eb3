import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from sklearn.metrics import roc_auc_score

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier
from sklearn_imgpair.__main__ import main
from sklearn_imgpair.datasets import make_image_pairs

from conftest import TINY_IMAGE_SIZE, TINY_SWIN

TINY_FIT = ["--no-pretrained", "--image-size", str(TINY_IMAGE_SIZE),
            "--model-kwargs", json.dumps(TINY_SWIN), "--max-epochs", "2", "--lr", "3e-3",
            "--batch-size", "16", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    """train.csv and test.csv with image paths relative to their folder."""
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
def model_path(csv_dir):
    """A model fitted once through the command line; tests must not overwrite it."""
    path = csv_dir / "model.pkl"
    assert main(["fit", "--train", str(csv_dir / "train.csv"), "--model", str(path),
                 *TINY_FIT]) == 0
    return path


@pytest.fixture(scope="module")
def model(model_path):
    with open(model_path, "rb") as file:
        return pickle.load(file)


def _test_pairs(csv_dir):
    frame = pd.read_csv(csv_dir / "test.csv")
    for column in ("Image1", "Image2"):
        frame[column] = [str(csv_dir / path) for path in frame[column]]
    return frame


def _assert_one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("sklearn-imgpair: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_fit_saves_a_fitted_classifier(model, csv_dir, capsys):
    assert isinstance(model, ImagePairClassifier)
    assert model.classes_.tolist() == [0, 1] and model.match_label == 1
    assert 1 <= len(model.history) <= 2 and model.image_size_ == TINY_IMAGE_SIZE
    assert not [name for name in os.listdir(csv_dir) if name.startswith(".model.pkl")]


def test_fit_takes_column_names_and_a_string_match_label(csv_dir, tmp_path, capsys):
    frame = pd.read_csv(csv_dir / "train.csv").rename(
        columns={"Image1": "query", "Image2": "response", "Label": "same"})
    frame["same"] = frame["same"].map({1: "yes", 0: "no"})
    frame.to_csv(csv_dir / "renamed.csv", index=False)
    path = tmp_path / "sub" / "renamed.pkl"
    assert main(["fit", "--train", str(csv_dir / "renamed.csv"), "--model", str(path),
                 "--image1", "query", "--image2", "response", "--label", "same",
                 "--match-label", "yes", *TINY_FIT, "--max-epochs", "1"]) == 0
    assert f"Saved the model to {path}" in capsys.readouterr().out
    with open(path, "rb") as file:
        clf = pickle.load(file)
    assert clf.classes_.tolist() == ["no", "yes"] and clf.match_label == "yes"


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


@pytest.mark.parametrize("extension", [".npy", ".csv"])
def test_embed_writes_one_vector_per_distinct_image(model_path, model, csv_dir, tmp_path,
                                                    extension, capsys):
    output = tmp_path / f"embeddings{extension}"
    assert main(["embed", "--model", str(model_path), "--data", str(csv_dir / "test.csv"),
                 "--output", str(output), "--column", "Image1"]) == 0
    if extension == ".npy":
        vectors = np.load(output)
        paths = (tmp_path / "embeddings.paths.txt").read_text().splitlines()
    else:
        table = pd.read_csv(output)
        paths, vectors = table["path"].tolist(), table.drop(columns="path").to_numpy()
        assert table.columns[1] == "e0"
    test = _test_pairs(csv_dir)
    assert paths == list(dict.fromkeys(test["Image1"]))  # distinct, first-seen order
    expected = ImageEmbedder(classifier=model).fit().transform(paths)
    assert vectors.shape == (len(paths), model.embedding_dim_)
    assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    assert f"Wrote {len(paths)} embeddings of length {model.embedding_dim_}" in (
        capsys.readouterr().out)


def test_embed_defaults_to_both_image_columns(model_path, csv_dir, tmp_path):
    output = tmp_path / "embeddings.npy"
    assert main(["embed", "--model", str(model_path), "--data", str(csv_dir / "test.csv"),
                 "--output", str(output)]) == 0
    test = _test_pairs(csv_dir)
    distinct = set(test["Image1"]) | set(test["Image2"])
    paths = (tmp_path / "embeddings.paths.txt").read_text().splitlines()
    assert sorted(paths) == sorted(distinct) and np.load(output).shape[0] == len(distinct)


def _command(name, model_path, data, tmp_path):
    if name == "fit":
        return ["fit", "--train", str(data), "--model", str(tmp_path / "m.pkl"), *TINY_FIT]
    output = {"predict": ["--output", str(tmp_path / "out.csv")],
              "embed": ["--output", str(tmp_path / "out.npy")], "evaluate": []}[name]
    return [name, "--model", str(model_path), "--data", str(data), *output]


@pytest.mark.parametrize("name", ["fit", "evaluate", "predict", "embed"])
def test_a_missing_image_fails_with_one_line_naming_row_column_and_path(
        name, model_path, csv_dir, tmp_path, capsys):
    frame = pd.read_csv(csv_dir / "test.csv")
    frame.loc[2, "Image1"] = "images/lost.png"
    frame.to_csv(csv_dir / f"lost_{name}.csv", index=False)
    data = csv_dir / f"lost_{name}.csv"
    assert main(_command(name, model_path, data, tmp_path)) == 2
    _assert_one_line_error(capsys, f"{data}, row 2, column 'Image1'",
                           f"'{csv_dir / 'images' / 'lost.png'}' does not exist")
    assert os.listdir(tmp_path) == []  # no model, no output


@pytest.mark.parametrize("name", ["fit", "evaluate", "predict", "embed"])
def test_a_missing_column_fails_with_one_line_naming_it(name, model_path, csv_dir, tmp_path,
                                                        capsys):
    frame = pd.read_csv(csv_dir / "test.csv")
    frame.drop(columns="Image2").to_csv(csv_dir / "one_image.csv", index=False)
    assert main(_command(name, model_path, csv_dir / "one_image.csv", tmp_path)) == 2
    _assert_one_line_error(capsys, "no column 'Image2'", "['Image1', 'Label']")


@pytest.mark.parametrize("name", ["fit", "evaluate"])
def test_a_missing_label_column_fails_with_one_line(name, model_path, csv_dir, tmp_path,
                                                    capsys):
    command = _command(name, model_path, csv_dir / "test.csv", tmp_path) + ["--label", "Match"]
    assert main(command) == 2
    _assert_one_line_error(capsys, "no column 'Match'")


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    (b"not a pickle", "is not a model file written by 'sklearn-imgpair fit'"),
    (pickle.dumps({"a": 1}), "holds a dict, not a model"),
])
def test_a_bad_model_file_fails_with_one_line(content, fragment, csv_dir, tmp_path, capsys):
    path = tmp_path / "model.pkl"
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
    assert main(["fit", "--train", str(broken), "--model", "m.pkl",
                 "--model-kwargs", "{not json"]) == 2
    assert "--model-kwargs: not valid JSON" in capsys.readouterr().err
    assert main(["embed", "--model", str(model_path), "--data", str(broken),
                 "--output", str(tmp_path / "out.txt")]) == 2
    _assert_one_line_error(capsys, "--output must end in .npy or .csv")


def test_fit_with_a_missing_weights_file_or_an_unknown_label_fails(csv_dir, tmp_path, capsys):
    train = str(csv_dir / "train.csv")
    assert main(["fit", "--train", train, "--model", str(tmp_path / "m.pkl"),
                 "--weights-path", str(tmp_path / "none.pth"), *TINY_FIT]) == 2
    _assert_one_line_error(capsys, "none.pth")
    assert main(["fit", "--train", train, "--model", str(tmp_path / "m.pkl"),
                 "--match-label", "same", *TINY_FIT]) == 2
    _assert_one_line_error(capsys, "--match-label 'same' is not one of the labels", "['0', '1']")
    assert os.listdir(tmp_path) == []


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "fit", "evaluate", "predict", "embed", "Image1,Image2,Label"):
        assert name in out
    assert main([]) == 2  # a command is required
    assert main(["predict", "--help"]) == 0
    assert "--threshold" in capsys.readouterr().out


def test_python_dash_m_exits_with_status_2_and_no_traceback(model_path, csv_dir, tmp_path):
    data = tmp_path / "lost.csv"
    data.write_text("Image1,Image2\nlost.png,lost.png\n")
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_imgpair", "predict", "--model", str(model_path),
         "--data", str(data), "--output", str(tmp_path / "out.csv")],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
        timeout=120)
    assert result.returncode == 2
    assert result.stderr == (f"sklearn-imgpair: error: {data}, row 0, column 'Image1': image "
                             f"'{tmp_path / 'lost.png'}' does not exist.\n")


def test_a_multi_image_cell_is_named_as_such(model_path, csv_dir, tmp_path, capsys):
    frame = pd.read_csv(csv_dir / "test.csv")
    frame.loc[1, "Image2"] = f"{frame.loc[0, 'Image1']};{frame.loc[0, 'Image2']}"
    frame.to_csv(csv_dir / "multi.csv", index=False)
    assert main(["predict", "--model", str(model_path), "--data", str(csv_dir / "multi.csv"),
                 "--output", str(tmp_path / "out.csv")]) == 2
    _assert_one_line_error(capsys, "row 1, column 'Image2'", "several images joined by ';'")


def test_verbose_shows_a_progress_bar_and_quiet_shows_none(model_path, csv_dir, tmp_path,
                                                           capsys):
    command = ["predict", "--model", str(model_path), "--data", str(csv_dir / "test.csv"),
               "--output", str(tmp_path / "out.csv")]
    assert main([*command, "--verbose"]) == 0
    assert "Predicting" in capsys.readouterr().err
    assert main([*command, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
