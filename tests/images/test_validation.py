import pathlib
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import _NotAnArray
from sklearn.utils.validation import column_or_1d

from sklearn_imgpair._images.validation import (
    check_files_exist,
    check_labelled_pairs,
    check_match_labels,
    check_pairs,
    check_paths,
)

PAIRS = [("a.png", "b.png"), ("c.png", "a.png"), ("d.png", "e.png")]
COLUMNS = {"Image1": [a for a, _ in PAIRS], "Image2": [b for _, b in PAIRS]}
PATHS = COLUMNS["Image1"]


@pytest.mark.parametrize(
    "make_X",
    [
        lambda: np.array(PAIRS),
        lambda: np.array(PAIRS, dtype=object),
        lambda: _NotAnArray(np.array(PAIRS)),
        lambda: pd.DataFrame(PAIRS, columns=["Image1", "Image2"]),
        lambda: pd.DataFrame(PAIRS, columns=["Image", "Image"]),
        lambda: pl.DataFrame(COLUMNS),
        lambda: pa.table(COLUMNS),
        lambda: pa.record_batch(COLUMNS),
        lambda: list(PAIRS),
        lambda: tuple(PAIRS),
        lambda: [[pathlib.Path(a), pathlib.Path(b)] for a, b in PAIRS],
    ],
    ids=["str-array", "object-array", "array-protocol-only", "pandas", "pandas-same-names",
         "polars", "pyarrow-table", "pyarrow-record-batch", "list", "tuple", "pathlib"],
)
def test_check_pairs_accepts_every_input_form(make_X):
    pairs = check_pairs(make_X())
    assert pairs.shape == (3, 2)
    assert pairs.dtype == object
    assert pairs.tolist() == [list(pair) for pair in PAIRS]
    assert all(type(cell) is str for cell in pairs.ravel())


def test_check_pairs_does_not_modify_or_keep_the_input():
    X = np.array(PAIRS, dtype=object)
    original = X.copy()
    pairs = check_pairs(X)
    pairs[0, 0] = "changed"
    assert (X == original).all()


@pytest.mark.parametrize(
    "X, match",
    [
        (np.array([["a", "b", "c"]]), r"must have 2 columns; got shape \(1, 3\)"),
        (np.array(["a", "b"]), r"must have 2 columns; got shape \(2,\)"),
        ([("a", "b"), ("c",)], "row 1 has 1"),
        ([("a", "b"), "cd"], "row 1 is 'cd'"),
        (pd.Series(["a", "b"]), "pandas Series"),
        (pl.Series(["a", "b"]), r"got a polars Series \(1 column\)"),
        (pa.chunked_array([["a", "b"]]), r"got a pyarrow ChunkedArray \(1 column\)"),
        (pa.array(["a", "b"]), r"got a pyarrow StringArray \(1 column\)"),
        (np.empty((0, 2), dtype=object), "X is empty"),
        ([], "X is empty"),
        ([("a", None)], r"X\[0, 1\] is missing"),
        ([("a", "b"), (float("nan"), "c")], r"X\[1, 0\] is missing"),
        ([("a", "")], r"X\[0, 1\] is an empty string"),
    ],
)
def test_check_pairs_rejects_bad_shapes_and_values(X, match):
    with pytest.raises(ValueError, match=match):
        check_pairs(X)


@pytest.mark.parametrize(
    "X, match",
    [
        ("a.png", "got a single str"),
        (12, "got int"),
        ([("a", 3)], r"X\[0, 1\] must be an image path .* got int 3"),
        ([("a", np.bytes_(b"b"))], r"X\[0, 1\] holds numpy bytes"),
        ([("a", ["b", ["c"]])], r"X\[0, 1\] \(image 2 of 2\) is a list; .* not in nested"),
    ],
)
def test_check_pairs_rejects_bad_types(X, match):
    with pytest.raises(TypeError, match=match):
        check_pairs(X)


def test_check_match_labels_encodes_string_labels():
    classes, targets = check_match_labels(["same", "diff", "same"], "same", 3)
    assert classes.tolist() == ["diff", "same"]
    np.testing.assert_array_equal(targets, [1.0, 0.0, 1.0])
    assert targets.dtype == np.float32


@pytest.mark.parametrize(
    "y, match_label, n, match",
    [
        ([0, 1, 1], 2, 3, r"match_label=2 is not one of the labels in y: \[0, 1\]"),
        ([1, 1, 1], 1, 3, "exactly two labels"),
        ([0, 1, 2], 1, 3, "exactly two labels"),
        ([0, 1], 1, 3, "X has 3 pairs, y has 2"),
        ([0, None, 1], 1, 3, r"missing labels at rows \[1\]"),
        (np.zeros((3, 2)), 1, 3, "1-dimensional"),
    ],
)
def test_check_match_labels_rejects_bad_labels(y, match_label, n, match):
    with pytest.raises(ValueError, match=match):
        check_match_labels(y, match_label, n)


def _pngs(folder, *names):
    for name in names:
        (folder / name).write_bytes(b"")
    return [str(folder / name) for name in names]


def test_check_files_exist_names_the_first_missing_cell(tmp_path):
    a, b = _pngs(tmp_path, "a.png", "b.png")
    pairs = np.array([[a, b], [b, str(tmp_path / "lost.png")], [str(tmp_path), a]], dtype=object)
    with pytest.raises(FileNotFoundError, match=r"X\[1, 1\]: image '.*lost.png' does not exist"):
        check_files_exist(pairs)
    with pytest.raises(ValueError, match=r"X\[1, 0\]: image '.*' is not a file"):
        check_files_exist(pairs[[0, 2]])
    check_files_exist(pairs[:1])


def test_check_files_exist_checks_each_image_joined_by_a_semicolon(tmp_path):
    a, b = _pngs(tmp_path, "a.png", "b.png")
    check_files_exist(np.array([[a, b], [a, f"{a};{b}"]], dtype=object))  # raw strings
    check_files_exist(check_pairs([[a, b], [a, f"{a};{b}"]]))  # normalised cells
    lost = str(tmp_path / "lost.png")
    with pytest.raises(FileNotFoundError,
                       match=r"^X\[1, 1\] \(image 2 of 2\): image '.*lost.png' does not exist"):
        check_files_exist(np.array([[a, b], [a, f"{a};{lost}"]], dtype=object))


# ----------------------------------------------------------------------
# containers: dataframes are read by column, whatever their library
# ----------------------------------------------------------------------


@pytest.mark.parametrize("make_frame", [pd.DataFrame, pl.DataFrame, pa.table, pa.record_batch],
                         ids=["pandas", "polars", "pyarrow-table", "pyarrow-record-batch"])
def test_check_pairs_reads_a_two_row_frame_by_column(make_frame):
    # Two rows and two columns: a frame iterated by column would come back transposed.
    frame = make_frame({"left": ["a.png", "b.png"], "right": ["c.png", "d.png"]})
    assert check_pairs(frame).tolist() == [["a.png", "c.png"], ["b.png", "d.png"]]


@pytest.mark.parametrize("make_frame", [pd.DataFrame, pl.DataFrame, pa.table],
                         ids=["pandas", "polars", "pyarrow"])
def test_check_pairs_names_the_missing_cell_of_a_frame_by_row_and_column(make_frame):
    frame = make_frame({"left": ["a.png", None, "e.png"], "right": ["b.png", "d.png", "f.png"]})
    with pytest.raises(ValueError, match=r"^X\[1, 0\] is missing"):
        check_pairs(frame)


@pytest.mark.parametrize(
    "make_X",
    [
        lambda: list(PATHS),
        lambda: np.array(PATHS),
        lambda: np.array(PATHS, dtype=object).reshape(-1, 1),
        lambda: _NotAnArray(np.array(PATHS)),
        lambda: pd.Series(PATHS),
        lambda: pd.DataFrame({"image": PATHS}),
        lambda: pl.Series(PATHS),
        lambda: pl.DataFrame({"image": PATHS}),
        lambda: pa.array(PATHS),
        lambda: pa.chunked_array([PATHS[:1], PATHS[1:]]),
        lambda: pa.table({"image": PATHS}),
        lambda: [[path] for path in PATHS],
    ],
    ids=["list", "array", "column-array", "array-protocol-only", "pandas-series",
         "pandas-frame", "polars-series", "polars-frame", "pyarrow-array",
         "pyarrow-chunked-array", "pyarrow-table", "list-of-rows"],
)
def test_check_paths_accepts_every_input_form(make_X):
    paths = check_paths(make_X())
    assert paths.shape == (3,) and paths.dtype == object
    assert paths.tolist() == PATHS
    assert all(type(cell) is str for cell in paths)


@pytest.mark.parametrize("make_X", [pl.Series, pa.array], ids=["polars", "pyarrow"])
def test_check_paths_names_the_missing_row_of_a_column(make_X):
    with pytest.raises(ValueError, match=r"^X\[1\] is missing \(None\)"):
        check_paths(make_X(["a.png", None, "c.png"]))


# ----------------------------------------------------------------------
# error paths of scikit-learn's estimator checks, in scikit-learn's words
# ----------------------------------------------------------------------

SPARSE = r"^Sparse data was passed for X, but dense data is required; got a csr_"
COMPLEX = r"^Complex data not supported; X holds complex numbers \(dtype complex128"


@pytest.mark.parametrize(
    "X, error, match",
    [
        (sparse.csr_matrix(np.ones((3, 2))), TypeError, SPARSE + r"matrix of shape \(3, 2\)"),
        (sparse.csr_array(np.ones((3, 2))), TypeError, SPARSE + r"array of shape \(3, 2\)"),
        (np.ones((3, 2)) + 1j, ValueError, COMPLEX),
        (np.ones((10, 1)) + 1j, ValueError, COMPLEX),  # before the number of columns
        (np.empty((12, 0)), ValueError,
         r"^X must have 2 columns; got shape \(12, 0\)\. Found array with 0 feature\(s\) "
         r"\(shape=\(12, 0\)\) while a minimum of 2 is required\.$"),
        (np.ones((10, 1)), ValueError,
         r"^X must have 2 columns; got shape \(10, 1\)\. Found array with 1 feature\(s\) "
         r"\(shape=\(10, 1\)\) while a minimum of 2 is required\.$"),
        (np.ones((48, 3)), ValueError, r"^X must have 2 columns; got shape \(48, 3\)\.$"),
        (np.empty((0, 2), dtype=object), ValueError,
         r"^X is empty; expected at least one pair of image paths\. Found array with 0 "
         r"sample\(s\) \(shape=\(0, 2\)\) while a minimum of 1 is required\.$"),
        (np.ones(20), ValueError, r"^X must have 2 columns; got shape \(20,\)\.$"),
        (np.full((3, 2), 7.5), TypeError,
         r"^X\[0, 0\] must be an image path \(str or path-like\), .*; got float64 7\.5\.$"),
    ],
    ids=["sparse-matrix", "sparse-array", "complex", "complex-one-column", "no-column",
         "one-column", "three-columns", "no-row", "one-dimensional", "numbers"],
)
def test_check_pairs_errors_in_scikit_learns_words(X, error, match):
    with pytest.raises(error, match=match):
        check_pairs(X)


@pytest.mark.parametrize(
    "X, error, match",
    [
        (sparse.csr_matrix(np.ones((3, 1))), TypeError, SPARSE + "matrix"),
        (sparse.csr_array(np.ones(3)), TypeError, SPARSE + "array"),
        (np.ones(10) + 1j, ValueError, COMPLEX),
        (np.empty((12, 0)), ValueError,
         r"^X must be one column of image paths; got shape \(12, 0\)\..* Found array with 0 "
         r"feature\(s\) \(shape=\(12, 0\)\) while a minimum of 1 is required\.$"),
        (np.empty((0, 1), dtype=object), ValueError,
         r"^X is empty; expected at least one image path\. Found array with 0 sample\(s\) "
         r"\(shape=\(0,\)\) while a minimum of 1 is required\.$"),
        (np.ones((10, 3)), ValueError,
         r"^X must be one column of image paths; got shape \(10, 3\)\."),
        (np.full(3, 7), TypeError,
         r"^X\[0\] must be an image path \(str or path-like\), .*; got int64 7\.$"),
    ],
    ids=["sparse-matrix", "sparse-array", "complex", "no-column", "no-row", "three-columns",
         "numbers"],
)
def test_check_paths_errors_in_scikit_learns_words(X, error, match):
    with pytest.raises(error, match=match):
        check_paths(X)


# ----------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_y",
    [list, np.asarray, _NotAnArray, pd.Series, pl.Series, pa.array,
     lambda y: pa.chunked_array([y[:1], y[1:]])],
    ids=["list", "array", "array-protocol-only", "pandas", "polars", "pyarrow-array",
         "pyarrow-chunked-array"],
)
def test_check_match_labels_reads_one_column_of_every_kind_without_a_warning(make_y):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classes, targets = check_match_labels(make_y(["same", "diff", "same"]), "same", 3)
    assert classes.tolist() == ["diff", "same"]
    np.testing.assert_array_equal(targets, [1.0, 0.0, 1.0])


@pytest.mark.parametrize(
    "make_y",
    [lambda y: np.asarray(y).reshape(-1, 1), lambda y: pd.DataFrame({"label": y}),
     lambda y: pl.DataFrame({"label": y}), lambda y: pa.table({"label": y})],
    ids=["array", "pandas", "polars", "pyarrow"],
)
def test_check_match_labels_flattens_a_column_vector_with_scikit_learns_warning(make_y):
    with pytest.warns(DataConversionWarning) as ours:
        classes, targets = check_match_labels(make_y([0, 1, 1]), 1, 3)
    with pytest.warns(DataConversionWarning) as theirs:
        column_or_1d(np.array([[0], [1], [1]]), warn=True)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert "A column-vector y was passed when a 1d array was expected" in str(ours[0].message)
    assert classes.tolist() == [0, 1]
    np.testing.assert_array_equal(targets, [0.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "y, error, match",
    [
        (None, ValueError, "requires y to be passed, but the target y is None"),
        ([0.5, 1.5, 2.5], ValueError, r"^Unknown label type: continuous\. "),
        (np.array([0, 1, 1], dtype=object), ValueError, r"^Unknown label type: unknown\. "),
        ([1 + 1j, 0j, 1j], ValueError, r"^Complex data not supported; y holds complex"),
        (sparse.csr_array(np.ones((3, 1))), TypeError,
         r"^Sparse data was passed for y, but dense data is required"),
        ([1, 1, 1], ValueError, r"exactly two labels \(match and non-match\); got 1 class: \[1\]"),
        ([0, 1, 2], ValueError, r"exactly two labels .*; got 3 classes: \[0, 1, 2\]"),
        ([], ValueError, r"^y is empty"),
    ],
    ids=["none", "continuous", "object-numbers", "complex", "sparse", "one-class",
         "three-classes", "empty"],
)
def test_check_match_labels_errors_in_scikit_learns_words(y, error, match):
    with pytest.raises(error, match=match):
        check_match_labels(y, 1, 3)


# ----------------------------------------------------------------------
# fit's order: what X is, then y, then X's shape and cells, then lengths
# ----------------------------------------------------------------------


def test_check_labelled_pairs_returns_pairs_classes_and_targets():
    pairs, classes, targets = check_labelled_pairs(pl.DataFrame(COLUMNS), ["s", "d", "s"], "s")
    assert pairs.tolist() == [list(pair) for pair in PAIRS]
    assert classes.tolist() == ["d", "s"]
    np.testing.assert_array_equal(targets, [1.0, 0.0, 1.0])


@pytest.mark.parametrize(
    "X, y, error, match",
    [
        # y before the shape and cells of X: numbers in another number of columns
        (np.ones((10, 3)), np.ones(10), ValueError, "got 1 class"),
        (np.ones((100, 2)), None, ValueError, "requires y to be passed"),
        (np.ones((200, 10)), np.linspace(-2, 3, 200), ValueError, "Unknown label type: "),
        (np.ones((1, 10)), [1], ValueError, "got 1 class"),
        # what X is before y
        ("a.png", [1], TypeError, "got a single str"),
        ([("a", "b"), ("c",)], [1, 1], ValueError, "row 1 has 1"),
        (sparse.csr_array(np.ones((4, 3))), [1, 1, 1, 1], TypeError, "Sparse data"),
        (np.ones((10, 1)) + 1j, np.ones(10) + 1j, ValueError, "Complex data not supported; X"),
        (np.empty((0, 2)), [], ValueError, r"^X is empty"),
        # X's shape and cells once y is fine, then the lengths
        (np.ones((12, 0)), [0, 1] * 6, ValueError, r"0 feature\(s\) \(shape=\(12, 0\)\)"),
        ([("a", "b"), ("c", 7)], [0, 1], TypeError, r"X\[1, 1\] must be an image path"),
        (PAIRS, [0, 1], ValueError, "X has 3 pairs, y has 2"),
    ],
    ids=["one-class", "y-none", "continuous", "one-sample", "single-path", "ragged",
         "sparse", "complex", "no-row", "no-column", "number-cell", "lengths"],
)
def test_check_labelled_pairs_reports_errors_in_order(X, y, error, match):
    with pytest.raises(error, match=match):
        check_labelled_pairs(X, y, 1)


class _PairClassifierStub(ClassifierMixin, BaseEstimator):
    """Validates ``fit``'s input as ImagePairClassifier does, and learns nothing."""

    def fit(self, X, y):
        check_labelled_pairs(X, y, match_label=1)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.classifier_tags.multi_class = False
        return tags


class _EmbedderStub(TransformerMixin, BaseEstimator):
    """Validates ``fit``'s input as ImageEmbedder does, and learns nothing."""

    def fit(self, X, y=None):
        check_paths(X)
        return self

    def transform(self, X):
        return np.zeros((len(check_paths(X)), 1))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


# check_estimator_sparse_array cannot build its data for a one_d_array estimator
# (scipy has no 1-D sparse array in LIL format); test_check_paths_errors_in_scikit_learns_words
# covers a sparse array.
EMBEDDER_ERROR_PATH_CHECKS = ["check_estimators_empty_data_messages",
                              "check_estimator_sparse_matrix", "check_estimator_sparse_tag",
                              "check_complex_data"]
CLASSIFIER_ERROR_PATH_CHECKS = EMBEDDER_ERROR_PATH_CHECKS + [
    "check_estimator_sparse_array", "check_requires_y_none",
    "check_classifiers_regression_target", "check_classifiers_one_label",
    "check_fit2d_1feature", "check_fit2d_1sample", "check_fit1d"]


@pytest.mark.parametrize(
    "estimator, check",
    [(_PairClassifierStub(), name) for name in CLASSIFIER_ERROR_PATH_CHECKS]
    + [(_EmbedderStub(), name) for name in EMBEDDER_ERROR_PATH_CHECKS],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
def test_validation_passes_scikit_learns_error_path_checks(estimator, check):
    # The checks feed numbers, which are no paths: each passes only where our
    # error comes first and says what the check looks for.
    getattr(estimator_checks, check)(type(estimator).__name__, estimator)
