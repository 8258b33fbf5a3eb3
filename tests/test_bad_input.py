"""The bad-input catalogue: every kind of bad input, for fit, predict_proba, transform and the CLI.

Each case must raise the documented exception type with a message that names
the row (and column) and the path, before any training, and must leave a
fitted estimator exactly as it was.
"""

import io
import shutil
import struct
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sklearn_imgpair import ImageEmbedder, UnreadableImageWarning
from sklearn_imgpair._cli.main import main

from conftest import TINY_IMAGE_SIZE, TINY_SWIN, make_tiny_classifier

BAD_ROW, BAD_COLUMN = 5, 1


def _png_claiming(width, height):
    """A 1 x 1 PNG whose header claims ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17]))
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def _encoded(format_):
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format_)
    return buffer.getvalue()


# name -> (how to make the file, error type, fragment of the message)
BAD_IMAGES = {
    "missing file": (None, FileNotFoundError, "not"),
    "directory": ("dir", ValueError, "not a file"),
    "zero-byte file": (b"", ValueError, "empty (0 bytes)"),
    "text file": (b"Image1,Image2\na.png,b.png\n", ValueError, "cannot identify image"),
    "truncated PNG": (_encoded("PNG")[:300], ValueError, "Cannot read image"),
    "truncated JPEG": (_encoded("JPEG")[:400], ValueError, "Cannot read image"),
    "decompression bomb": (_png_claiming(30_000, 30_000), ValueError, "decompression bomb"),
    "above the pixel limit": (_png_claiming(10_000, 10_000), ValueError, "MAX_IMAGE_PIXELS"),
}


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_images")
    paths = {}
    for index, (name, (content, _, _)) in enumerate(BAD_IMAGES.items()):
        path = folder / f"bad{index}.png"
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
        paths[name] = str(path)
    return paths


def _with_bad_cell(X, path):
    X = X.copy()
    X[BAD_ROW, BAD_COLUMN] = path
    return X


@pytest.fixture(scope="module")
def refit_target(image_pairs):
    """A fitted classifier and its probabilities: failed refits must leave both alone."""
    clf = make_tiny_classifier(max_epochs=1).fit(*image_pairs)
    return clf, clf.predict_proba(image_pairs[0])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", BAD_IMAGES)
def test_fit_names_the_bad_image_and_keeps_the_fitted_model(name, bad_images, image_pairs,
                                                            refit_target):
    X, y = image_pairs
    clf, before = refit_target
    _, error, fragment = BAD_IMAGES[name]
    with pytest.raises(error, match=rf"X\[{BAD_ROW}, {BAD_COLUMN}\]") as raised:
        clf.fit(_with_bad_cell(X, bad_images[name]), y)
    assert fragment in str(raised.value) and bad_images[name] in str(raised.value)
    np.testing.assert_array_equal(clf.predict_proba(X), before)  # nothing lost


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", BAD_IMAGES)
def test_predict_proba_names_the_bad_image(name, bad_images, fitted_clf, image_pairs):
    X, _ = image_pairs
    _, error, fragment = BAD_IMAGES[name]
    with pytest.raises(error, match=rf"X\[{BAD_ROW}, {BAD_COLUMN}\]") as raised:
        fitted_clf.predict_proba(_with_bad_cell(X, bad_images[name]))
    assert fragment in str(raised.value) and bad_images[name] in str(raised.value)


@pytest.fixture(scope="module")
def embedder():
    return ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                         model_kwargs=dict(TINY_SWIN), cache=False).fit()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", BAD_IMAGES)
def test_transform_names_the_bad_image(name, bad_images, embedder, image_pairs):
    paths = list(image_pairs[0][:8, 0])
    paths[BAD_ROW] = bad_images[name]
    _, error, fragment = BAD_IMAGES[name]
    with pytest.raises(error, match=rf"X\[{BAD_ROW}\]") as raised:
        embedder.transform(paths)
    assert fragment in str(raised.value) and bad_images[name] in str(raised.value)


# ----------------------------------------------------------------------
# on_error="warn": NaN for exactly the affected rows, one warning
# ----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_warn_gives_nan_to_exactly_the_rows_of_unreadable_images(bad_images, fitted_clf,
                                                                 image_pairs):
    X, _ = image_pairs
    X = X[:40].copy()
    expected = fitted_clf.predict_proba(X)
    broken = {3: bad_images["truncated PNG"], 11: bad_images["missing file"],
              20: bad_images["zero-byte file"]}
    for row, path in broken.items():
        X[row, row % 2] = path
    X[30, 1] = bad_images["truncated PNG"]  # the same broken image in a second row
    clf = fitted_clf.set_params(on_error="warn")
    try:
        with pytest.warns(UnreadableImageWarning) as record:
            proba = clf.predict_proba(X)
        with pytest.warns(UnreadableImageWarning):
            decision = clf.decision_function(X)
        with pytest.warns(UnreadableImageWarning):
            predicted = clf.predict(X)
    finally:
        fitted_clf.set_params(on_error="raise")
    assert len(record) == 1
    warning = record[0].message
    bad_rows = [3, 11, 20, 30]
    assert warning.rows.tolist() == bad_rows and len(warning.failures) == 3
    assert all(path in str(warning) for path in broken.values())
    assert np.isnan(proba[bad_rows]).all() and np.isnan(decision[bad_rows]).all()
    good = np.setdiff1d(np.arange(len(X)), bad_rows)
    # The others are unaffected (up to float rounding: the batches differ, and the
    # calibrated head's atanh amplifies the last bits of cosines near 1).
    np.testing.assert_allclose(proba[good], expected[good], rtol=0, atol=1e-5)
    assert (predicted[bad_rows] == 0).all()  # NaN is not above the threshold


def test_warn_score_uses_the_readable_pairs(bad_images, fitted_clf, image_pairs):
    X, y = image_pairs
    X_bad = X.copy()
    X_bad[0, 0] = bad_images["text file"]
    clf = fitted_clf.set_params(on_error="warn")
    try:
        with pytest.warns(UnreadableImageWarning):
            score = clf.score(X_bad, y)
    finally:
        fitted_clf.set_params(on_error="raise")
    assert score == pytest.approx(fitted_clf.score(X[1:], y[1:]))


def test_warn_embedder_nan_rows_are_not_cached(bad_images, image_pairs, tmp_path):
    paths = list(image_pairs[0][:6, 0])
    image = tmp_path / "later.png"
    image.write_bytes(b"")
    paths[2] = str(image)
    embedder = ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                             model_kwargs=dict(TINY_SWIN), on_error="warn").fit()
    for _ in range(2):  # a cached NaN would come back the second time without a warning
        with pytest.warns(UnreadableImageWarning, match=r"X\[2\]"):
            vectors = embedder.transform(paths)
    assert np.isnan(vectors[2]).all() and not np.isnan(np.delete(vectors, 2, axis=0)).any()
    shutil.copy(paths[0], image)  # the file is repaired
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        repaired = embedder.transform(paths)
    np.testing.assert_allclose(repaired[2], vectors[0], atol=1e-6)


def test_warn_fit_leaves_out_the_pairs_of_unreadable_images(bad_images, image_pairs):
    X, y = image_pairs
    X = X.copy()
    X[[4, 9], [0, 1]] = bad_images["truncated JPEG"], bad_images["directory"]
    clf = make_tiny_classifier(max_epochs=1, on_error="warn", train_split=None)
    with pytest.warns(UnreadableImageWarning, match="left out of training") as record:
        clf.fit(X, y)
    assert record[0].message.rows.tolist() == [4, 9]
    batches = clf.history[-1, "batches"]
    assert sum(batch["train_batch_size"] for batch in batches) == len(X) - 2


def test_warn_fit_refuses_when_too_few_pairs_remain(bad_images, image_pairs):
    X, y = image_pairs
    X = X.copy()
    X[y == 1, 0] = bad_images["text file"]  # every matching pair is unreadable
    clf = make_tiny_classifier(max_epochs=1, on_error="warn")
    with pytest.warns(UnreadableImageWarning), pytest.raises(ValueError, match="Too few pairs"):
        clf.fit(X, y)


# ----------------------------------------------------------------------
# the table itself: shapes, cells and labels
# ----------------------------------------------------------------------

TABLE_CASES = {
    "three columns": (lambda X: np.c_[X, X[:, :1]], ValueError, "2 columns"),
    "one column": (lambda X: X[:, :1], ValueError, "2 columns"),
    "empty": (lambda X: X[:0], ValueError, "empty"),
    "None cell": (lambda X: _set(X, None), ValueError, r"X\[5, 1\] is missing"),
    "NaN cell": (lambda X: _set(X, np.nan), ValueError, r"X\[5, 1\] is missing"),
    "number cell": (lambda X: _set(X, 7), TypeError, r"X\[5, 1\] must be an image path"),
    "bytes cell": (lambda X: _set(X, b"a.png"), ValueError,
                   r"X\[5, 1\]: Cannot read image from bytes of length 5 \(b'a.png'\): PIL cannot "
                   "identify"),
    "empty string": (lambda X: _set(X, ""), ValueError, r"X\[5, 1\] is an empty string"),
    "NUL in path": (lambda X: _set(X, "a\x00.png"), ValueError, r"X\[5, 1\] holds a NUL"),
    "single string": (lambda X: "a.png", TypeError, "single str"),
    "ragged rows": (lambda X: [tuple(X[0]), (X[1, 0],)], ValueError, "row 1 has 1"),
}


def _set(X, value):
    X = X.astype(object).copy()
    X[BAD_ROW, BAD_COLUMN] = value
    return X


@pytest.mark.parametrize("case", TABLE_CASES)
def test_bad_tables_fail_in_fit_and_predict(case, fitted_clf, image_pairs):
    X, y = image_pairs
    make, error, match = TABLE_CASES[case]
    bad = make(X)
    clf = make_tiny_classifier(max_epochs=1)
    n = len(bad) if hasattr(bad, "__len__") and not isinstance(bad, str) else 1
    with pytest.raises(error, match=match):
        clf.fit(bad, y[:n])
    assert not hasattr(clf, "module_")  # failed before any network was built
    with pytest.raises(error, match=match):
        fitted_clf.predict_proba(bad)


LABEL_CASES = {
    "no match_label": (lambda y: np.where(y == 1, 2, 0), ValueError, "match_label=1 is not"),
    "single class": (lambda y: np.zeros_like(y), ValueError, "exactly two labels"),
    "three classes": (lambda y: np.arange(len(y)) % 3, ValueError, "exactly two labels"),
    "too short": (lambda y: y[:-1], ValueError, "different lengths"),
    "missing label": (lambda y: np.where(np.arange(len(y)) == 4, np.nan, y), ValueError,
                      r"missing labels at rows \[4\]"),
    "mixed types": (lambda y: np.array([1 if i % 2 else "a" for i in range(len(y))],
                                       dtype=object), TypeError, "cannot be compared"),
    "2-D labels": (lambda y: np.c_[y, y], ValueError, "1-dimensional"),
}


@pytest.mark.parametrize("case", LABEL_CASES)
def test_bad_labels_fail_before_training(case, image_pairs):
    X, y = image_pairs
    make, error, match = LABEL_CASES[case]
    clf = make_tiny_classifier(max_epochs=1)
    with pytest.raises(error, match=match):
        clf.fit(X, make(y))
    assert not hasattr(clf, "module_")


@pytest.mark.parametrize("paths, error, match", [
    ([], ValueError, "empty"),
    ("a.png", TypeError, "single str"),
    (np.array([["a.png", "b.png"]]), ValueError, "one column"),
    ([["a.png", "b.png"]], ValueError, r"one column of image paths; row 0 has 2 values.*tuple"),
    ([None], ValueError, r"X\[0\] is missing"),
    ([3.5], TypeError, "must be an image path"),
])
def test_bad_path_lists_fail_in_transform(paths, error, match, embedder):
    with pytest.raises(error, match=match):
        embedder.transform(paths)


# ----------------------------------------------------------------------
# the command line: one line naming the CSV line and column
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, fitted_clf):
    return fitted_clf.save(tmp_path_factory.mktemp("cli") / "model.safetensors")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", ["missing file", "truncated PNG", "text file",
                                  "decompression bomb"])
def test_cli_names_the_csv_line_of_a_bad_image(name, bad_images, cli_model, image_pairs,
                                               tmp_path, capsys):
    X, y = image_pairs
    X = _with_bad_cell(X[:10], bad_images[name])
    data = tmp_path / "pairs.csv"
    pd.DataFrame({"Image1": X[:, 0], "Image2": X[:, 1], "Label": y[:10]}).to_csv(data,
                                                                                index=False)
    for command in (["predict", "--output", str(tmp_path / "out.csv")], ["evaluate"],
                    ["embed", "--output", str(tmp_path / "e.npy")]):
        source = "--images" if command[0] == "embed" else "--data"
        assert main([command[0], "--model", str(cli_model), source, str(data),
                     *command[1:], "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"line {BAD_ROW + 2}" in err[0] and "Image2" in err[0]
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "e.npy").exists()


def test_cli_warn_writes_empty_predictions_for_unreadable_rows(bad_images, cli_model,
                                                               image_pairs, tmp_path, capsys):
    X, _ = image_pairs
    X = _with_bad_cell(X[:10], bad_images["zero-byte file"])
    data = tmp_path / "pairs.csv"
    pd.DataFrame({"Image1": X[:, 0], "Image2": X[:, 1]}).to_csv(data, index=False)
    output = tmp_path / "out.csv"
    assert main(["predict", "--model", str(cli_model), "--data", str(data), "--output",
                 str(output), "--on-error", "warn", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "1 image(s) could not be read" in err and f"line {BAD_ROW + 2}" in err
    table = pd.read_csv(output)
    empty = table["probability"].isna() & table["prediction"].isna()
    assert empty.tolist() == [row == BAD_ROW for row in range(10)]


@pytest.mark.parametrize("guess", [None, 16])
def test_images_are_read_again_when_the_input_size_is_known_only_after_building(
        guess, bad_images, image_pairs, monkeypatch):
    from sklearn_imgpair._training import fitting

    monkeypatch.setattr(fitting, "expected_image_size", lambda *args: guess)
    X, y = image_pairs
    X = X.copy()
    X[7, 0] = bad_images["text file"]
    clf = make_tiny_classifier(max_epochs=1, on_error="warn", train_split=None)
    with pytest.warns(UnreadableImageWarning):
        clf.fit(X, y)
    batches = clf.history[-1, "batches"]
    assert sum(batch["train_batch_size"] for batch in batches) == len(X) - 1
    assert clf.image_size_ == TINY_IMAGE_SIZE


def test_pairs_left_out_after_building_are_left_out_of_the_validation_split_too(
        bad_images, image_pairs, monkeypatch):
    # The input size is only known once the network is built: the images are
    # read then, and the pairs left out must not reach skorch's split.
    from sklearn_imgpair._training import fitting

    monkeypatch.setattr(fitting, "expected_image_size", lambda *args: None)
    X, y = image_pairs
    X = X.copy()
    X[7, 0] = bad_images["text file"]
    clf = make_tiny_classifier(max_epochs=1, on_error="warn")
    with pytest.warns(UnreadableImageWarning):
        clf.fit(X, y)
    batches = clf.history[-1, "batches"]
    n_train = sum(batch.get("train_batch_size", 0) for batch in batches)
    n_valid = sum(batch.get("valid_batch_size", 0) for batch in batches)
    assert n_train + n_valid == len(X) - 1
