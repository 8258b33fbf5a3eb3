"""Input validation for image-pair data: shapes, cells and labels."""

import os
import sys

import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import column_or_1d, validate_data

from sklearn_imgpair._images.cells import (
    IMAGE_SEPARATOR,
    as_cell,
    describe_cell,
    distinct_images,
    distinct_paths,
    image_names,
    is_missing,
)
from sklearn_imgpair._images.pixels import ENCODED_TYPES, describe_image

__all__ = ["IMAGE_SEPARATOR", "check_classes", "check_files_exist", "check_labelled_pairs",
           "check_match_labels", "check_pair_features", "check_pairs", "check_paths",
           "distinct_paths"]

_PAIRS_EXPECTED = "a 2-column table of images (DataFrame, array or list of pairs)"
_PATHS_EXPECTED = ("a sequence of images (list, 1-D array, Series or one-column table of "
                   "paths or in-memory images)")


def _single_image(X):
    """What ``X`` is when it is one image (a path, bytes, a PIL image); None otherwise."""
    if isinstance(X, (str, os.PathLike, *ENCODED_TYPES)):
        return f"a single {type(X).__name__}"
    if isinstance(X, Image.Image):
        return "a single PIL image"
    return None


def _is_dataframe_column(X):
    """Whether ``X`` is a pandas or polars Series or a pyarrow Array or ChunkedArray.

    Libraries are looked up in :data:`sys.modules`, as scikit-learn's
    ``sklearn.utils._dataframe`` does: one that is not imported made no ``X``.
    """
    polars, pyarrow = sys.modules.get("polars"), sys.modules.get("pyarrow")
    return (isinstance(X, pd.Series)
            or (polars is not None and isinstance(X, polars.Series))
            or (pyarrow is not None and isinstance(X, (pyarrow.Array, pyarrow.ChunkedArray))))


def _check_real(values, name):
    """Refuse complex numbers with scikit-learn's words; return ``values``."""
    if values.dtype.kind == "c":
        raise ValueError(f"Complex data not supported; {name} holds complex numbers "
                         f"(dtype {values.dtype}, shape {values.shape}).")
    return values


def _as_array(X, name):
    """``X`` as an ndarray where it is one or offers ``__array__``; None otherwise.

    As in scikit-learn's ``check_array``, :func:`numpy.asarray` converts
    ndarrays, objects that only offer ``__array__`` and the tables of
    pandas, polars and pyarrow (>= 13), whose ``__array__`` gives one row per
    sample. Lists and other iterables are left to the caller, which reads
    them row by row and names a ragged row.
    """
    if sparse.issparse(X):
        raise TypeError(f"Sparse data was passed for {name}, but dense data is required; got "
                        f"a {type(X).__name__} of shape {X.shape}.")
    if not (isinstance(X, np.ndarray) or hasattr(X, "__array__")):
        return None
    return _check_real(np.asarray(X), name)


def _features_message(values, minimum):
    """scikit-learn's ``check_array`` sentence for too few columns."""
    return (f"Found array with {values.shape[1]} feature(s) (shape={values.shape}) while a "
            f"minimum of {minimum} is required.")


def _samples_message(values):
    """scikit-learn's ``check_array`` sentence for no rows."""
    return (f"Found array with 0 sample(s) (shape={values.shape}) while a minimum of 1 is "
            "required.")


def _pairs_table(X):
    """``X`` as an ndarray of any shape: what ``X`` is, before its shape and cells.

    Raises for a single path, sparse or complex data, a one-column container
    and ragged rows.
    """
    single = _single_image(X)
    if single is not None:
        raise TypeError(f"X must be {_PAIRS_EXPECTED}; got {single}.")
    if _is_dataframe_column(X):
        library = type(X).__module__.partition(".")[0]
        raise ValueError(
            f"X must have 2 columns; got a {library} {type(X).__name__} (1 column). Pass a "
            "DataFrame with two image columns, e.g. df[['Image1', 'Image2']]."
        )
    values = _as_array(X, "X")
    if values is not None:
        return values
    try:
        rows = list(X)
    except TypeError:
        raise TypeError(f"X must be {_PAIRS_EXPECTED}; got {type(X).__name__}.") from None
    values = np.empty((len(rows), 2), dtype=object)
    for index, row in enumerate(rows):
        if (_single_image(row) is not None or not hasattr(row, "__len__")
                or (isinstance(row, np.ndarray) and row.dtype == np.uint8 and row.ndim < 4)):
            what = (describe_image(row) if isinstance(row, (np.ndarray, Image.Image))
                    else describe_cell(row))
            raise ValueError(f"X must have 2 columns; row {index} is {what}, not a pair of "
                             "images.")
        if len(row) != 2:
            raise ValueError(f"X must have 2 columns; row {index} has {len(row)}.")
        values[index, 0], values[index, 1] = row[0], row[1]
    return values


def _pair_cells(values):
    """Check the shape of an array from :func:`_pairs_table`, then normalise its cells."""
    if values.ndim != 2 or values.shape[1] != 2:
        message = f"X must have 2 columns; got shape {values.shape}."
        if values.ndim == 2 and values.shape[1] < 2:
            message += " " + _features_message(values, minimum=2)
        raise ValueError(message)
    if values.shape[0] == 0:
        raise ValueError("X is empty; expected at least one pair of image paths. "
                         + _samples_message(values))
    pairs = np.empty(values.shape, dtype=object)
    memo = {}  # one image object in many cells is hashed once
    for row in range(values.shape[0]):
        for column in range(2):
            pairs[row, column] = as_cell(values[row, column], f"X[{row}, {column}]", memo)
    return pairs


def check_pairs(X):
    """Turn image-pair input into an ``(n_pairs, 2)`` object array of normalised cells.

    Parameters
    ----------
    X : array-like or dataframe of shape (n_pairs, 2), or sequence of pairs
        Two columns of images: a two-column pandas, polars or pyarrow
        table, an array of shape ``(n_pairs, 2)`` or anything
        :func:`numpy.asarray` turns into one, or a list of
        ``(image_a, image_b)`` pairs (each row of a list is a pair, so a
        multi-image cell in a list of pairs is a list or tuple inside the
        pair). Columns are taken by position, not by name. Cells may be paths (``str`` or
        :class:`os.PathLike`), the bytes of an image file (``bytes``,
        ``bytearray``, ``memoryview``), PIL images, ``uint8`` arrays of
        shape ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, or several images
        of one item: a list or tuple of these, or paths joined by ``";"``
        (unless the whole string names an existing file).

    Returns
    -------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        A new array of normalised cells (see
        ``as_cell``): paths as ``str``,
        in-memory images as ``InMemoryImage``, several images of one item as
        a tuple of those. The caller's ``X`` is never modified.

    Raises
    ------
    ValueError
        If ``X`` is empty, has another number of columns than 2, holds
        complex numbers, or a cell is missing (None, NaN), empty (string,
        bytes, list), no valid path (a NUL character) or an array of
        another dtype or shape. Messages for too few columns and for no
        rows end with scikit-learn's ``check_array`` sentence.
    TypeError
        If ``X`` is a single image or sparse, or a cell is of no accepted
        kind.
    """
    return _pair_cells(_pairs_table(X))


def check_paths(X):
    """Turn one column of images into a 1-D object array of normalised cells.

    Parameters
    ----------
    X : array-like of shape (n_images,) or (n_images, 1)
        One image (or one item of several images) per row: a list, a 1-D
        array, a pandas or polars Series, a pyarrow Array or ChunkedArray, a
        one-column array or table, or anything :func:`numpy.asarray` turns
        into one of these. Cells are those of :func:`check_pairs`; a tuple
        is one item of several images (of one image, that image). In a
        Python list of rows, a list of one value is that value (a row of a
        one-column table) and a list of several is refused as a table of
        several columns; in an array or Series, a list cell is an item.

    Returns
    -------
    cells : ndarray of shape (n_images,), dtype=object
        Normalised cells, as :func:`check_pairs` returns them. A new array;
        the caller's ``X`` is never modified.

    Raises
    ------
    ValueError
        If ``X`` is empty, has more than one column, holds complex numbers,
        or a cell is missing or empty or a bad array.
    TypeError
        If ``X`` is a single image or sparse, or a cell is of no accepted
        kind.
    """
    single = _single_image(X)
    if single is not None:
        raise TypeError(f"X must be {_PATHS_EXPECTED}; got {single}. Wrap it in a list.")
    values = _as_array(X, "X")
    if values is None:
        try:
            items = list(X)
        except TypeError:
            raise TypeError(f"X must be {_PATHS_EXPECTED}; got {type(X).__name__}.") from None
        values = np.empty(len(items), dtype=object)
        for row, item in enumerate(items):
            if isinstance(item, list) and len(item) > 1:  # a row of a table, not an item
                raise ValueError(
                    f"X must be one column of image paths; row {row} has {len(item)} values. "
                    "Give the images of one item as a tuple, e.g. (path_a, path_b).")
            values[row] = item
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        message = (f"X must be one column of image paths; got shape {values.shape}. "
                   "For pairs of images use ImagePairClassifier or PairFeatures.")
        if values.ndim == 2 and values.shape[1] == 0:
            message += " " + _features_message(values, minimum=1)
        if values.dtype == np.uint8 and values.ndim >= 2:
            message += " Images given as arrays go in a list, one array per image."
        raise ValueError(message)
    if values.shape[0] == 0:
        raise ValueError("X is empty; expected at least one image path. "
                         + _samples_message(values))
    cells = np.empty(len(values), dtype=object)
    memo = {}  # one image object in many cells is hashed once
    for row, value in enumerate(values):
        cells[row] = as_cell(value, f"X[{row}]", memo)
    return cells


def check_pair_features(estimator, X, *, reset):
    """Set or compare ``n_features_in_`` and ``feature_names_in_`` of a pair estimator.

    As scikit-learn's :func:`~sklearn.utils.validation.validate_data` does:
    with ``reset=True`` (``fit``) ``n_features_in_`` becomes 2 and
    ``feature_names_in_`` the column names of a dataframe with string column
    names (or is removed); with ``reset=False`` a dataframe whose names
    differ from those seen in ``fit`` raises a ``ValueError``, and names on
    one side only give a warning. ``X`` must have passed :func:`check_pairs`.
    """
    validate_data(estimator, X, skip_check_array=True, ensure_2d=False, reset=reset)
    if reset:
        estimator.n_features_in_ = 2


def check_classes(classes, match_label):
    """Check the ``classes`` given to ``partial_fit``: two labels, one of them ``match_label``.

    Returns
    -------
    classes : ndarray of shape (2,)
        The labels, sorted.
    """
    classes = np.unique(np.asarray(classes))
    if len(classes) != 2 or match_label not in classes.tolist():
        raise ValueError(f"classes must be two labels including match_label={match_label!r}; "
                         f"got {classes.tolist()}.")
    return classes


def _check_lengths(n_pairs, n_labels):
    if n_pairs != n_labels:
        raise ValueError(f"X and y have different lengths: X has {n_pairs} pairs, "
                         f"y has {n_labels}.")


def _label_column(y):
    """``y`` as a 1-D ndarray; a column vector is flattened with scikit-learn's warning."""
    if y is None:
        raise ValueError("This classifier requires y to be passed, but the target y is None; "
                         "give one label per pair.")
    values = _as_array(y, "y")
    y = _check_real(np.asarray(y), "y") if values is None else values
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)  # warns with DataConversionWarning
    if y.ndim != 1:
        raise ValueError(f"y must be 1-dimensional; got shape {y.shape}.")
    if y.shape[0] == 0:
        raise ValueError("y is empty; expected one label per pair.")
    return y


def check_match_labels(y, match_label, n_samples=None, classes=None):
    """Validate binary pair labels and encode them as match targets.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Two distinct labels, one of which is ``match_label``. A column
        vector of shape ``(n_samples, 1)`` is flattened with a
        :class:`~sklearn.exceptions.DataConversionWarning`, as scikit-learn's
        :func:`~sklearn.utils.validation.column_or_1d` does.
    match_label : int, str or bool
        The label that means "both images show the same thing".
    n_samples : int, default=None
        Number of pairs in ``X``; ``y`` must have this length. None leaves
        the comparison to the caller (see :func:`check_labelled_pairs`).
    classes : ndarray of shape (2,), default=None
        The labels known from an earlier fit (``partial_fit``): ``y`` may then
        hold one of them only, but nothing else.

    Returns
    -------
    classes : ndarray of shape (2,)
        The two labels, sorted as :func:`numpy.unique` sorts them.
    targets : ndarray of shape (n_samples,), dtype=float32
        1.0 where ``y == match_label``, else 0.0.

    Raises
    ------
    ValueError
        If ``y`` is None, empty, not one column, complex, continuous (in
        scikit-learn's words, "Unknown label type"), of another length than
        ``n_samples``, misses a label, or does not hold exactly two labels
        including ``match_label``.
    TypeError
        If ``y`` is sparse or mixes labels that cannot be compared.
    """
    y = _label_column(y)
    if classes is not None:
        unknown = np.setdiff1d(y, classes)
        if unknown.size:
            raise ValueError(f"y holds labels {unknown[:10].tolist()} not seen in the first "
                             f"fit (classes_={classes.tolist()}).")
        if n_samples is not None:
            _check_lengths(n_samples, len(y))
        return classes, (y == match_label).astype(np.float32)
    if n_samples is not None:
        _check_lengths(n_samples, len(y))
    missing = [i for i, value in enumerate(y) if is_missing(value)]
    if missing:
        raise ValueError(f"y has missing labels at rows {missing[:10]}.")
    try:
        classes = np.unique(y)
    except TypeError:
        kinds = sorted({type(value).__name__ for value in y})
        raise TypeError(f"y mixes labels of types that cannot be compared: {kinds}; use "
                        "labels of one type.") from None
    target_type = type_of_target(y)
    if target_type not in ("binary", "multiclass"):
        kind = ("continuous values, a regression target" if target_type == "continuous"
                else f"values of dtype {y.dtype}")
        raise ValueError(
            f"Unknown label type: {target_type}. y must hold two discrete labels (match and "
            "non-match) such as 0 and 1, True and False or two strings; got "
            f"{kind}: {describe_cell(y[:5].tolist())}."
        )
    if len(classes) != 2:
        noun = "class" if len(classes) == 1 else "classes"
        raise ValueError(
            "y must hold exactly two labels (match and non-match); got "
            f"{len(classes)} {noun}: {classes[:10].tolist()}."
        )
    if match_label not in classes.tolist():
        raise ValueError(
            f"match_label={match_label!r} is not one of the labels in y: "
            f"{classes.tolist()}. Set match_label to the label that means 'same'."
        )
    return classes, (y == match_label).astype(np.float32)


def check_labelled_pairs(X, y, match_label, classes=None):
    """Validate the pairs and labels given to ``fit``, in scikit-learn's order of errors.

    What ``X`` is comes first (a single path, sparse or complex data, ragged
    rows), then ``y`` (as :func:`check_match_labels`), then the shape and the
    cells of ``X`` (as :func:`check_pairs`), then that both have one row per
    pair. Label errors thus come before the shape and cells of ``X``: an
    estimator check of scikit-learn that fits on a numeric table of another
    width (``check_classifiers_one_label``, ``check_requires_y_none``,
    ``check_classifiers_regression_target``, ``check_fit2d_1sample``) sees
    the error about ``y`` it looks for.

    Parameters
    ----------
    X : array-like or dataframe of shape (n_pairs, 2), or sequence of pairs
        As for :func:`check_pairs`.
    y : array-like of shape (n_pairs,)
        As for :func:`check_match_labels`.
    match_label : int, str or bool
        The label that means "both images show the same thing".
    classes : ndarray of shape (2,), default=None
        The labels known from an earlier fit, as for :func:`check_match_labels`.

    Returns
    -------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        As returned by :func:`check_pairs`.
    classes : ndarray of shape (2,)
        The two labels, sorted.
    targets : ndarray of shape (n_pairs,), dtype=float32
        1.0 where ``y == match_label``, else 0.0.
    """
    table = _pairs_table(X)
    if table.ndim and table.shape[0] == 0:
        _pair_cells(table)  # no pairs: X's error rather than y's
    classes, targets = check_match_labels(y, match_label, classes=classes)
    pairs = _pair_cells(table)
    _check_lengths(len(pairs), len(targets))
    return pairs, classes, targets


def check_files_exist(pairs):
    """Check that every image file of every pair is a file, before any work starts.

    Each distinct path is looked at once; in-memory images need no file.
    Cells may be normalised (from :func:`check_pairs`) or raw path strings
    (a table read from a CSV file), whose ``";"``-joined paths are checked
    one by one.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        Pairs of cells, as returned by :func:`check_pairs`.

    Raises
    ------
    FileNotFoundError
        Naming the first row and column (and, for a cell of several images,
        which of them) whose path does not exist.
    ValueError
        Naming the first row and column whose path is not a file.
    """
    cells, first, _ = distinct_paths(pairs)
    images, _, offsets, image_first = distinct_images(cells)
    for index, image in enumerate(images):  # in row order: the first bad cell is named
        if not isinstance(image, str) or os.path.isfile(image):
            continue
        names = image_names(cells, offsets, image_first,
                            [f"X[{position // 2}, {position % 2}]" for position in first])
        if os.path.exists(image):
            raise ValueError(f"{names[index]}: image {image!r} is not a file.")
        raise FileNotFoundError(f"{names[index]}: image {image!r} does not exist.")
