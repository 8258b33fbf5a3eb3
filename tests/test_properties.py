"""Property-based tests: random shapes, dtypes and values get only the documented errors."""

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from sklearn.utils.estimator_checks import _NotAnArray

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from sklearn_imgpair import ImageEmbedder, check_pairs, check_paths  # noqa: E402
from sklearn_imgpair._images.cells import InMemoryImage  # noqa: E402
from sklearn_imgpair._images.validation import check_match_labels  # noqa: E402

from conftest import TINY_IMAGE_SIZE, TINY_SWIN, make_tiny_classifier  # noqa: E402

# What input validation may raise, as documented; anything else is a bug.
DOCUMENTED = (ValueError, TypeError, FileNotFoundError)
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

cells = st.one_of(
    st.none(), st.just(np.nan), st.just(pd.NA), st.booleans(), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.binary(max_size=6), st.lists(st.integers(), max_size=2),
    st.tuples(st.text(max_size=3), st.text(max_size=3)), st.complex_numbers(),
)
dtypes = st.one_of(hnp.integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes(),
                   hnp.unicode_string_dtypes(max_len=4), hnp.byte_string_dtypes(max_len=4),
                   hnp.datetime64_dtypes(), st.just(np.dtype(object)))
arrays = dtypes.flatmap(lambda dtype: hnp.arrays(
    dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    elements=cells if dtype == np.dtype(object) else None))
text_tables = arrays.filter(lambda a: a.ndim == 2 and a.dtype.kind == "U")


def _columns(array):
    return {f"column{j}": array[:, j].tolist() for j in range(array.shape[1])}


tables = st.one_of(
    arrays,
    arrays.map(_NotAnArray),  # converts through __array__ only
    # DataFrames of any dtype but datetime64, which pandas itself may refuse to hold.
    arrays.filter(lambda a: a.ndim == 2 and a.dtype.kind != "M").map(pd.DataFrame),
    text_tables.map(lambda a: pl.DataFrame(_columns(a))),
    text_tables.map(lambda a: pa.table(_columns(a))),
    st.lists(st.lists(cells, max_size=3), max_size=4),
    st.lists(cells, max_size=4),
    cells,
)

# Texts every container holds as they are: no NUL (numpy drops trailing ones), no
# lone surrogate (not UTF-8, so not in Arrow); no ';', which joins several images.
paths = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00;"),
                min_size=1, max_size=8)
PAIR_CONTAINERS = {
    "list": list,
    "array": lambda pairs: np.array(pairs, dtype=object),
    "array-protocol-only": lambda pairs: _NotAnArray(np.array(pairs, dtype=object)),
    "pandas": lambda pairs: pd.DataFrame(pairs, columns=["Image1", "Image2"]),
    "polars": lambda pairs: pl.DataFrame(_columns(np.array(pairs, dtype=object))),
    "pyarrow": lambda pairs: pa.table(_columns(np.array(pairs, dtype=object))),
}
PATH_CONTAINERS = {
    "list": list,
    "array": lambda column: np.array(column, dtype=object),
    "array-protocol-only": lambda column: _NotAnArray(np.array(column, dtype=object)),
    "pandas": pd.Series,
    "polars": pl.Series,
    "pyarrow": pa.array,
}


def _is_cell(cell):
    """A normalised cell: a non-empty path, an in-memory image, or a tuple of two or more."""
    if isinstance(cell, tuple):
        return len(cell) >= 2 and all(_is_cell(image) and not isinstance(image, tuple)
                                      for image in cell)
    return isinstance(cell, InMemoryImage) or (isinstance(cell, str) and bool(cell))


def _documented(call, *args):
    """Call; an exception must be of a documented type and say something."""
    try:
        return call(*args)
    except DOCUMENTED as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return None


@SETTINGS
@given(tables)
def test_check_pairs_returns_path_pairs_or_a_documented_error(X):
    pairs = _documented(check_pairs, X)
    if pairs is not None:
        assert pairs.dtype == object and pairs.ndim == 2 and pairs.shape[1] == 2
        assert len(pairs) > 0 and all(_is_cell(cell) for cell in pairs.ravel())


@SETTINGS
@given(tables)
def test_check_paths_returns_paths_or_a_documented_error(X):
    paths = _documented(check_paths, X)
    if paths is not None:
        assert paths.ndim == 1 and len(paths) > 0
        assert all(_is_cell(cell) for cell in paths)


@SETTINGS
@given(st.lists(st.tuples(paths, paths), min_size=1, max_size=5),
       st.sampled_from(sorted(PAIR_CONTAINERS)))
def test_check_pairs_reads_every_container_row_by_row(pairs, container):
    assert check_pairs(PAIR_CONTAINERS[container](pairs)).tolist() == [list(p) for p in pairs]


@SETTINGS
@given(st.lists(paths, min_size=1, max_size=5), st.sampled_from(sorted(PATH_CONTAINERS)))
def test_check_paths_reads_every_container_in_order(column, container):
    assert check_paths(PATH_CONTAINERS[container](column)).tolist() == column


labels = st.one_of(arrays, arrays.map(_NotAnArray), st.lists(cells, max_size=6))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.DataConversionWarning")  # (n, 1) labels
@SETTINGS
@given(labels, st.one_of(st.integers(-1, 2), st.text(max_size=2), st.booleans(), st.none()),
       st.integers(0, 6))
def test_check_match_labels_encodes_or_raises_a_documented_error(y, match_label, n):
    result = _documented(check_match_labels, y, match_label, n)
    if result is not None:
        classes, targets = result
        assert len(classes) == 2 and match_label in classes.tolist()
        assert targets.shape == (n,) and set(np.unique(targets)) <= {0.0, 1.0}


@pytest.fixture(scope="module")
def embedder():
    return ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                         model_kwargs=dict(TINY_SWIN)).fit()


@settings(SETTINGS, max_examples=60)
@given(X=tables)
def test_estimators_give_only_documented_errors_on_random_input(X, fitted_clf, embedder):
    # Random cells are no image files: every call must fail, with a documented error.
    for call in (fitted_clf.predict_proba, fitted_clf.decision_function, embedder.transform):
        with pytest.raises(DOCUMENTED):
            call(X)
    try:
        y = np.arange(len(X)) % 2
    except TypeError:  # a scalar or 0-d array
        y = np.array([0, 1])
    clf = make_tiny_classifier(max_epochs=1)
    with pytest.raises(DOCUMENTED):
        clf.fit(X, y)
    assert not hasattr(clf, "module_")  # nothing was built for bad input
