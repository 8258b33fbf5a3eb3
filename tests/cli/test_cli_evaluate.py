"""``sklearn-imgpair evaluate``: the best-accuracy threshold and the ROC and PR plot."""

import os
import re
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from numpy.testing import assert_allclose
from PIL import Image
from sklearn.metrics import roc_auc_score

from sklearn_imgpair import ImagePairClassifier
from sklearn_imgpair.__main__ import main
from sklearn_imgpair._cli.evaluation import best_accuracy_threshold
from sklearn_imgpair.datasets import make_image_pairs

from conftest import TINY_IMAGE_SIZE, make_tiny_classifier

BEST_LINE = re.compile(r"^best      (\d\.\d{4}) at threshold (\S+), the most accurate on these "
                       r"pairs \(ties: the highest\)$", re.M)


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    """train.csv and test.csv (labels 0 and 1), and test_str.csv with the labels
    "match" and "no match"; image paths relative to the folder. Read only."""
    folder = tmp_path_factory.mktemp("csv")
    train, test = make_image_pairs(folder / "images", n_products=8, n_views=3,
                                   image_size=TINY_IMAGE_SIZE, n_pairs=80, random_state=0)
    for column in ("Image1", "Image2"):
        for frame in (train, test):
            frame[column] = [os.path.relpath(path, folder) for path in frame[column]]
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    test.assign(Label=test["Label"].map({1: "match", 0: "no match"})).to_csv(
        folder / "test_str.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def model_path(csv_dir, tmp_path_factory):
    """A classifier fitted for 2 epochs and saved; tests must not overwrite it."""
    train = pd.read_csv(csv_dir / "train.csv")
    X = np.array([[str(csv_dir / path) for path in row]
                  for row in train[["Image1", "Image2"]].to_numpy()], dtype=object)
    clf = make_tiny_classifier(max_epochs=2).fit(X, train["Label"])
    return clf.save(tmp_path_factory.mktemp("model") / "model.safetensors")


@pytest.fixture(scope="module")
def string_model_path(model_path, tmp_path_factory):
    """The same network with the labels "match" and "no match": the match label is the
    smaller class, so that its probability is column 0."""
    clf = ImagePairClassifier.load(model_path).set_params(match_label="match")
    clf.classes_ = np.array(["match", "no match"], dtype=object)
    return clf.save(tmp_path_factory.mktemp("string_model") / "model.safetensors")


@pytest.fixture(scope="module")
def test_set(csv_dir, model_path):
    """``(is_match, match)``: the truth and the model's match probability on test.csv."""
    test = pd.read_csv(csv_dir / "test.csv")
    X = test[["Image1", "Image2"]].map(lambda path: str(csv_dir / path)).to_numpy(dtype=object)
    match = ImagePairClassifier.load(model_path).predict_proba(X)[:, 1]
    return test["Label"].to_numpy() == 1, match


def _evaluate(model_path, data, *options):
    return main(["evaluate", "--model", str(model_path), "--data", str(data), *options])


def _assert_one_line_error(capsys, *fragments):
    captured = capsys.readouterr()
    assert captured.err.startswith("sklearn-imgpair: error: "), captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in captured.err, captured.err
    return captured


# ----------------------------------------------------------------------
# the best threshold
# ----------------------------------------------------------------------


def _brute_force_best(is_match, match):
    """Every threshold that makes a distinct cut, scored: ``(threshold, accuracy)`` of
    the best, the highest threshold among equals."""
    candidates = np.r_[0.0, np.unique(match)]  # p > u calls the values above u matches
    accuracies = np.array([np.mean((match > t) == is_match) for t in candidates])
    best = np.flatnonzero(accuracies == accuracies.max())[-1]
    return candidates[best], accuracies[best]


@pytest.mark.parametrize("is_match, match, expected", [
    # 3 of 4 right with 0.4 or 0.9 called matches, and with 0.9 alone: ties, the highest.
    ([False, True, False, True], [0.1, 0.4, 0.6, 0.9], (0.8, 0.75)),
    ([True, True], [0.2, 0.7], (0.0, 1.0)),  # all match: threshold 0
    ([False, False], [0.2, 0.7], (1.0, 1.0)),  # none match: threshold 1
    ([True, True], [0.0, 0.5], (0.0, 0.5)),  # no threshold calls a probability of 0 a match
    ([False, True, True], [0.2, 0.61, 0.9], (0.4, 1.0)),  # the fewest decimal places
])
def test_best_accuracy_threshold_by_hand(is_match, match, expected):
    threshold, accuracy = best_accuracy_threshold(np.array(is_match),
                                                  np.array(match, dtype=np.float32))
    assert (threshold, accuracy) == pytest.approx(expected)


def test_best_accuracy_threshold_separates_neighbouring_float32_values():
    match = np.array([0.1, np.nextafter(np.float32(0.1), np.float32(1))], dtype=np.float32)
    threshold, accuracy = best_accuracy_threshold(np.array([False, True]), match)
    assert accuracy == 1.0 and ((match > threshold) == [False, True]).all()


@pytest.mark.parametrize("seed", range(5))
def test_best_accuracy_threshold_matches_a_brute_force_scan(seed):
    rng = np.random.default_rng(seed)
    match = rng.choice(np.float32([0.05, 0.2, 0.35, 0.5, 0.8, 1.0]), size=40)  # ties
    is_match = rng.random(40) < match
    threshold, accuracy = best_accuracy_threshold(is_match, match)
    brute_threshold, brute_accuracy = _brute_force_best(is_match, match)
    assert accuracy == pytest.approx(brute_accuracy)
    assert ((match > threshold) == (match > brute_threshold)).all()


def test_best_accuracy_threshold_needs_pairs():
    with pytest.raises(ValueError, match="at least one pair; got none"):
        best_accuracy_threshold(np.array([], dtype=bool), np.array([], dtype=np.float32))


def test_evaluate_prints_the_best_accuracy_threshold(model_path, csv_dir, test_set, capsys):
    is_match, match = test_set
    assert _evaluate(model_path, csv_dir / "test.csv") == 0
    out = capsys.readouterr().out
    assert f"accuracy  {np.mean((match > 0.5) == is_match):.4f} at threshold 0.5\n" in out
    printed_accuracy, printed_threshold = BEST_LINE.search(out).groups()
    brute_threshold, brute_accuracy = _brute_force_best(is_match, match)
    assert printed_accuracy == f"{brute_accuracy:.4f}"
    # The printed threshold makes the brute-force best cut, typed back as it reads.
    assert ((match > float(printed_threshold)) == (match > brute_threshold)).all()
    assert brute_accuracy >= np.mean((match > 0.5) == is_match)
    # ... and --threshold at it gives that accuracy.
    assert _evaluate(model_path, csv_dir / "test.csv", "--threshold", printed_threshold) == 0
    assert (f"accuracy  {printed_accuracy} at threshold {float(printed_threshold):g}\n"
            in capsys.readouterr().out)


def test_evaluate_with_the_smaller_label_as_match_label(model_path, string_model_path,
                                                        csv_dir, capsys):
    assert _evaluate(model_path, csv_dir / "test.csv") == 0
    numeric = capsys.readouterr().out
    assert _evaluate(string_model_path, csv_dir / "test_str.csv") == 0
    out = capsys.readouterr().out
    assert out == numeric  # the same network scores the same pairs: the same report


# ----------------------------------------------------------------------
# --plot
# ----------------------------------------------------------------------


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib Figure saved while the test runs."""
    saved = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


@pytest.mark.parametrize("model, data", [("model_path", "test.csv"),
                                         ("string_model_path", "test_str.csv")])
def test_plot_writes_the_roc_and_precision_recall_curves(model, data, csv_dir, test_set,
                                                         tmp_path, saved_figures, capsys,
                                                         request):
    is_match, match = test_set
    path = tmp_path / "out" / "curves.png"
    assert _evaluate(request.getfixturevalue(model), csv_dir / data, "--plot", str(path)) == 0
    assert f"Wrote the ROC and precision-recall curves to {path}\n" in capsys.readouterr().out
    assert os.listdir(path.parent) == ["curves.png"]  # no temporary file left
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1100, 500)  # 11 x 5 inches, 100 dpi
        assert len(image.convert("RGB").getcolors(maxcolors=100_000)) > 10  # drawn on
    (figure,) = saved_figures
    roc_axes, pr_axes = figure.axes
    assert roc_axes.get_xlabel().startswith("False Positive Rate")
    assert pr_axes.get_xlabel().startswith("Recall")
    # The curves are those of the match probability, whichever column holds it.
    legend = [text.get_text() for text in roc_axes.get_legend().get_texts()]
    assert f"model.safetensors (AUC = {roc_auc_score(is_match, match):.2f})" in legend
    precision = pr_axes.lines[0].get_ydata()
    assert_allclose(precision[0], is_match.mean())  # at recall 1: the matches' share


def test_plot_as_svg(model_path, csv_dir, tmp_path):
    path = tmp_path / "curves.svg"
    assert _evaluate(model_path, csv_dir / "test.csv", "--plot", str(path)) == 0
    assert path.read_text().lstrip().startswith("<?xml")


@pytest.fixture
def no_evaluation(monkeypatch):
    """Fail the test if the command starts predicting."""
    def predict_proba(self, X):
        raise AssertionError("evaluated before checking --plot")

    monkeypatch.setattr(ImagePairClassifier, "predict_proba", predict_proba)


@pytest.mark.parametrize("plot, fragment", [
    ("folder.png", "is a folder; give a file name"),
    (os.path.join("file", "sub", "curves.png"), "is a file, not a folder"),
    ("curves.jpg", "--plot must end in .png, .pdf or .svg; got"),
])
def test_a_bad_plot_path_fails_before_evaluating(plot, fragment, model_path, csv_dir,
                                                 tmp_path, no_evaluation, capsys):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file").write_text("")
    assert _evaluate(model_path, csv_dir / "test.csv", "--plot", str(tmp_path / plot)) == 2
    assert _assert_one_line_error(capsys, fragment).out == ""
    assert sorted(os.listdir(tmp_path)) == ["file", "folder.png"]


def test_plot_without_matplotlib_says_how_to_install_it(model_path, csv_dir, tmp_path,
                                                        no_evaluation, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    assert _evaluate(model_path, csv_dir / "test.csv", "--plot",
                     str(tmp_path / "curves.png")) == 2
    _assert_one_line_error(capsys, "--plot needs matplotlib", "pip install matplotlib")
    assert os.listdir(tmp_path) == []


def test_plot_needs_both_labels(model_path, csv_dir, tmp_path, no_evaluation, capsys):
    frame = pd.read_csv(csv_dir / "test.csv")
    frame = frame[frame["Label"] == 1].assign(
        Image1=lambda f: [str(csv_dir / path) for path in f["Image1"]],
        Image2=lambda f: [str(csv_dir / path) for path in f["Image2"]])
    data = tmp_path / "matches.csv"
    frame.to_csv(data, index=False)
    assert _evaluate(model_path, data, "--plot", str(tmp_path / "curves.png")) == 2
    _assert_one_line_error(capsys, "--plot needs pairs of both labels", str(data))
    assert os.listdir(tmp_path) == ["matches.csv"]
