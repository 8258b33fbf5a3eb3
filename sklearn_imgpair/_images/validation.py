"""Input validation for image-pair data: shapes, cell types and labels."""

import os
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.utils.multiclass import type_of_target

__all__ = ["IMAGE_SEPARATOR", "check_classes", "check_files_exist", "check_match_labels",
           "check_pairs", "check_paths", "distinct_paths"]

#: Joins several images of one item in a cell of a pairs table (AutoMM's format).
IMAGE_SEPARATOR = ";"


def _describe_cell(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_missing(value):
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, Real) and not isinstance(value, Integral) and np.isnan(value)


def _as_path_string(value, cell):
    """Return ``value`` as a path string; errors name the ``cell`` (e.g. ``"X[3, 1]"``)."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, bytes):
            raise TypeError(f"{cell} must be a path string; got bytes {_describe_cell(value)}.")
        if not path:
            raise ValueError(f"{cell} is an empty string; expected an image path.")
        if "\x00" in path:
            raise ValueError(f"{cell} holds a NUL character, which no file path can contain: "
                             f"{_describe_cell(value)}.")
        try:
            os.fsencode(path)
        except UnicodeError:
            raise ValueError(f"{cell} cannot be encoded as a file path on this system: "
                             f"{_describe_cell(value)}.") from None
        return str(path)
    if _is_missing(value):
        raise ValueError(f"{cell} is missing ({_describe_cell(value)}); every cell must hold "
                         "an image path.")
    raise TypeError(f"{cell} must be an image path (str or path-like); got "
                    f"{type(value).__name__} {_describe_cell(value)}.")


def check_pairs(X):
    """Turn image-pair input into an ``(n_pairs, 2)`` object array of path strings.

    Parameters
    ----------
    X : DataFrame, ndarray or sequence of pairs
        Two columns of image paths: a two-column :class:`pandas.DataFrame`, an
        array of shape ``(n_pairs, 2)`` or a list of ``(path_a, path_b)``
        pairs. Columns are taken by position, not by name. Cells may be
        ``str`` or :class:`os.PathLike`.

    Returns
    -------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        A new array of ``str``; the caller's ``X`` is never modified.

    Raises
    ------
    ValueError
        If ``X`` is empty, has another number of columns than 2, or a cell is
        missing (None, NaN), empty, or no valid path (a NUL character).
    TypeError
        If ``X`` is a string or a cell is not a path.
    """
    if isinstance(X, (str, bytes, os.PathLike)):
        raise TypeError(
            "X must be a 2-column table of image paths (DataFrame, array or list of "
            f"pairs); got a single {type(X).__name__}."
        )
    if isinstance(X, pd.DataFrame):
        values = X.to_numpy(dtype=object)
    elif isinstance(X, pd.Series):
        raise ValueError(
            "X must have 2 columns; got a pandas Series (1 column). Pass a DataFrame "
            "with two image-path columns, e.g. df[['Image1', 'Image2']]."
        )
    elif isinstance(X, np.ndarray):
        values = X
    else:
        try:
            rows = list(X)
        except TypeError:
            raise TypeError(
                "X must be a 2-column table of image paths (DataFrame, array or list "
                f"of pairs); got {type(X).__name__}."
            ) from None
        values = np.empty((len(rows), 2), dtype=object)
        for index, row in enumerate(rows):
            if isinstance(row, (str, bytes, os.PathLike)) or not hasattr(row, "__len__"):
                raise ValueError(
                    f"X must have 2 columns; row {index} is {_describe_cell(row)}, "
                    "not a pair of paths."
                )
            if len(row) != 2:
                raise ValueError(f"X must have 2 columns; row {index} has {len(row)}.")
            values[index, 0], values[index, 1] = row[0], row[1]
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(f"X must have 2 columns; got shape {values.shape}.")
    if values.shape[0] == 0:
        raise ValueError("X is empty; expected at least one pair of image paths.")

    pairs = np.empty(values.shape, dtype=object)
    for row in range(values.shape[0]):
        for column in range(2):
            pairs[row, column] = _as_path_string(values[row, column], f"X[{row}, {column}]")
    return pairs


def check_paths(X):
    """Turn one column of image paths into a 1-D object array of ``str``.

    Parameters
    ----------
    X : list, 1-D ndarray, Series, or one-column 2-D ndarray or DataFrame
        Image paths, ``str`` or :class:`os.PathLike`.

    Returns
    -------
    paths : ndarray of shape (n_images,), dtype=object
        A new array; the caller's ``X`` is never modified.

    Raises
    ------
    ValueError
        If ``X`` is empty, has more than one column, or a cell is missing.
    TypeError
        If ``X`` is a single string or a cell is not a path.
    """
    if isinstance(X, (str, bytes, os.PathLike)):
        raise TypeError(
            "X must be a sequence of image paths (list, 1-D array, Series or one-column "
            f"table); got a single {type(X).__name__}. Wrap it in a list."
        )
    if isinstance(X, (pd.DataFrame, pd.Series)):
        values = X.to_numpy(dtype=object)
    elif isinstance(X, np.ndarray):
        values = X
    else:
        try:
            items = list(X)
        except TypeError:
            raise TypeError(
                "X must be a sequence of image paths (list, 1-D array, Series or "
                f"one-column table); got {type(X).__name__}."
            ) from None
        values = np.empty(len(items), dtype=object)
        for row, item in enumerate(items):
            if isinstance(item, (list, tuple)):
                if len(item) != 1:
                    raise ValueError(
                        f"X must be one column of image paths; row {row} has "
                        f"{len(item)} values."
                    )
                item = item[0]
            values[row] = item
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(
            f"X must be one column of image paths; got shape {values.shape}. "
            "For pairs of images use ImagePairClassifier or PairFeatures."
        )
    if values.shape[0] == 0:
        raise ValueError("X is empty; expected at least one image path.")
    return np.array([_as_path_string(value, f"X[{row}]") for row, value in enumerate(values)],
                    dtype=object)


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


def check_match_labels(y, match_label, n_samples, classes=None):
    """Validate binary pair labels and encode them as match targets.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Two distinct labels, one of which is ``match_label``.
    match_label : int, str or bool
        The label that means "both images show the same thing".
    n_samples : int
        Number of pairs in ``X``; ``y`` must have this length.
    classes : ndarray of shape (2,), default=None
        The labels known from an earlier fit (``partial_fit``): ``y`` may then
        hold one of them only, but nothing else.

    Returns
    -------
    classes : ndarray of shape (2,)
        The two labels, sorted as :func:`numpy.unique` sorts them.
    targets : ndarray of shape (n_samples,), dtype=float32
        1.0 where ``y == match_label``, else 0.0.
    """
    if classes is not None:
        values = np.asarray(y).reshape(-1)
        unknown = np.setdiff1d(values, classes)
        if unknown.size:
            raise ValueError(f"y holds labels {unknown[:10].tolist()} not seen in the first "
                             f"fit (classes_={classes.tolist()}).")
        if len(values) != n_samples:
            raise ValueError(f"X and y have different lengths: X has {n_samples} pairs, "
                             f"y has {len(values)}.")
        return classes, (values == match_label).astype(np.float32)
    y = np.asarray(y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-dimensional; got shape {y.shape}.")
    if y.shape[0] != n_samples:
        raise ValueError(
            f"X and y have different lengths: X has {n_samples} pairs, y has {y.shape[0]}."
        )
    missing = [i for i, value in enumerate(y) if _is_missing(value)]
    if missing:
        raise ValueError(f"y has missing labels at rows {missing[:10]}.")
    try:
        classes = np.unique(y)
    except TypeError:
        kinds = sorted({type(value).__name__ for value in y})
        raise TypeError(f"y mixes labels of types that cannot be compared: {kinds}; use "
                        "labels of one type.") from None
    if len(classes) != 2 or type_of_target(y) != "binary":
        raise ValueError(
            "y must hold exactly two labels (match and non-match); got "
            f"{len(classes)}: {classes[:10].tolist()}."
        )
    if match_label not in classes.tolist():
        raise ValueError(
            f"match_label={match_label!r} is not one of the labels in y: "
            f"{classes.tolist()}. Set match_label to the label that means 'same'."
        )
    return classes, (y == match_label).astype(np.float32)


def distinct_paths(paths):
    """The distinct values of ``paths``, in the order of their first occurrence.

    Parameters
    ----------
    paths : ndarray of str
        Any shape; read in C order (row by row for pairs).

    Returns
    -------
    unique : ndarray of shape (n_unique,), dtype=object
        Each path once, in the order it first occurs: errors about them come
        in row order.
    first : ndarray of shape (n_unique,)
        Flat position of each path's first occurrence (increasing).
    inverse : ndarray of shape (paths.size,)
        ``unique[inverse]`` rebuilds the flattened ``paths``.
    """
    inverse, unique = pd.factorize(np.asarray(paths, dtype=object).ravel())
    first = np.full(len(unique), -1, dtype=np.intp)
    positions = np.arange(len(inverse) - 1, -1, -1)
    first[inverse[::-1]] = positions  # the last write, the earliest position, wins
    return np.asarray(unique, dtype=object), first, inverse.astype(np.intp)


def check_files_exist(pairs):
    """Check that every image of every pair is a file, before any work starts.

    Each distinct path is looked at once.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        As returned by :func:`check_pairs`.

    Raises
    ------
    FileNotFoundError
        Naming the first row and column whose path does not exist.
    ValueError
        Naming the first row and column whose path is not a file, or that
        joins several existing images with ``;`` (a multi-image cell of the
        AutoMM format; each side of a pair must be one image).
    """
    paths, first = np.unique(pairs.ravel(), return_index=True)
    for position in np.sort(first[[not os.path.isfile(path) for path in paths]]):
        row, column = divmod(int(position), 2)
        path = pairs[row, column]
        parts = path.split(IMAGE_SEPARATOR)
        if len(parts) > 1 and all(map(os.path.isfile, parts)):
            raise ValueError(f"X[{row}, {column}]: {path!r} holds several images joined by "
                             "';'; each side of a pair must be one image.")
        if os.path.exists(path):
            raise ValueError(f"X[{row}, {column}]: image {path!r} is not a file.")
        raise FileNotFoundError(f"X[{row}, {column}]: image {path!r} does not exist.")
