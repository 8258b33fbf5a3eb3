import pathlib

import numpy as np
import pandas as pd
import pytest

from sklearn_imgpair._images.validation import check_files_exist, check_match_labels, check_pairs

PAIRS = [("a.png", "b.png"), ("c.png", "a.png"), ("d.png", "e.png")]


@pytest.mark.parametrize(
    "make_X",
    [
        lambda: np.array(PAIRS),
        lambda: np.array(PAIRS, dtype=object),
        lambda: pd.DataFrame(PAIRS, columns=["Image1", "Image2"]),
        lambda: list(PAIRS),
        lambda: [[pathlib.Path(a), pathlib.Path(b)] for a, b in PAIRS],
    ],
    ids=["str-array", "object-array", "frame", "list", "pathlib"],
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
        ([("a", b"b")], r"X\[0, 1\] must be an image path"),
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


def test_check_match_labels_accepts_series_and_column_vector():
    _, from_series = check_match_labels(pd.Series([0, 1, 1]), 1, 3)
    _, from_column = check_match_labels(np.array([[0], [1], [1]]), 1, 3)
    np.testing.assert_array_equal(from_series, from_column)


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


def test_check_files_exist_recognises_several_images_joined_by_a_semicolon(tmp_path):
    a, b = _pngs(tmp_path, "a.png", "b.png")
    pairs = np.array([[a, b], [a, f"{a};{b}"]], dtype=object)
    with pytest.raises(ValueError, match=r"X\[1, 1\]: .* holds several images joined by ';'"):
        check_files_exist(pairs)
