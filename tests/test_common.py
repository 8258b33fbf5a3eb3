"""scikit-learn's estimator contract, checked on every estimator without expected failures.

The estimators take image paths, not numeric arrays, and say so in their tags
as scikit-learn's own string-input estimators do (``CountVectorizer``,
``DictVectorizer``): ``input_tags.string=True`` and
``input_tags.two_d_array=False`` (``one_d_array=True`` for the embedder's one
column of paths). With those tags scikit-learn's generic suite, which builds
numeric data, runs only its clone check (``test_generic_suite``). So, as in
scikit-learn's own ``test_common.py``:

* the checks that need no data, and the error-path checks (which must fail
  cleanly on numeric input), are called directly (``test_check``);
* the checks that need a fit are written again on image paths, asserting
  what scikit-learn's versions assert (``test_*`` below, one function each,
  parametrized over the estimators).
"""

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks as checks
from sklearn.utils.estimator_checks import _NotAnArray, parametrize_with_checks

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier, PairFeatures

from conftest import TINY_IMAGE_SIZE, TINY_SWIN

TINY = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))


def _estimators():
    estimators = [
        ImagePairClassifier(max_epochs=1, train_split=None, random_state=0, **TINY),
        ImageEmbedder(**TINY),
        PairFeatures(ImageEmbedder(**TINY)),
    ]
    try:
        from accelerate import Accelerator

        from sklearn_imgpair import AcceleratedImagePairClassifier
    except ImportError:  # the distributed extra is optional
        return estimators
    accelerated = AcceleratedImagePairClassifier(
        accelerator=Accelerator(cpu=True), max_epochs=1, train_split=None, random_state=0,
        **TINY)
    return estimators + [accelerated]


ESTIMATORS = _estimators()
IDS = [type(estimator).__name__ for estimator in ESTIMATORS]


def _is_pairwise(estimator):
    return not isinstance(estimator, ImageEmbedder)


def _is_classifier(estimator):
    return isinstance(estimator, ImagePairClassifier)


# ----------------------------------------------------------------------
# scikit-learn's own checks
# ----------------------------------------------------------------------


@parametrize_with_checks(ESTIMATORS)
def test_generic_suite(estimator, check):
    # With string input tags this is the clone check alone, and no check is
    # expected to fail.
    check(estimator)


DATA_INDEPENDENT_CHECKS = [
    checks.check_estimator_cloneable,
    checks.check_estimator_repr,
    checks.check_valid_tag_types,
    checks.check_estimator_tags_renamed,
    checks.check_mixin_order,
    checks.check_no_attributes_set_in_init,
    checks.check_get_params_invariance,
    checks.check_set_params,
    checks.check_parameters_default_constructible,
    checks.check_do_not_raise_errors_in_init_or_set_params,
    checks.check_estimators_unfitted,
    checks.check_param_validation,
]
# Numeric, sparse, complex, empty or one-class input must fail with the error
# (and, where the check reads it, the wording) scikit-learn expects.
ERROR_PATH_CHECKS = [
    checks.check_estimators_empty_data_messages,
    checks.check_estimator_sparse_tag,
    checks.check_estimator_sparse_array,
    checks.check_estimator_sparse_matrix,
    checks.check_complex_data,
]
CLASSIFIER_ERROR_PATH_CHECKS = [
    checks.check_requires_y_none,
    checks.check_classifiers_regression_target,
    checks.check_classifiers_one_label,
    checks.check_fit2d_1sample,
    checks.check_fit2d_1feature,
]
TRANSFORMER_CHECKS = [checks.check_get_feature_names_out_error]


def _direct_checks():
    for estimator, name in zip(ESTIMATORS, IDS):
        selected = DATA_INDEPENDENT_CHECKS + ERROR_PATH_CHECKS
        if _is_classifier(estimator):
            selected = selected + CLASSIFIER_ERROR_PATH_CHECKS
        else:
            selected = selected + TRANSFORMER_CHECKS
        if estimator.__sklearn_tags__().input_tags.one_d_array:
            # scikit-learn builds 1-D data for one_d_array estimators, and scipy
            # cannot make a 1-D sparse array in LIL format: the check itself
            # fails before it calls the estimator. Sparse input is covered by
            # check_estimator_sparse_matrix for these estimators.
            selected = [check for check in selected
                        if check is not checks.check_estimator_sparse_array]
        for check in selected:
            yield pytest.param(estimator, check, id=f"{name}-{check.__name__}")


@pytest.mark.parametrize("estimator, check", list(_direct_checks()))
def test_check(estimator, check):
    check(type(estimator).__name__, clone(estimator))


# ----------------------------------------------------------------------
# the checks that need a fit, on image paths
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(image_pairs):
    """``(pairs, labels)`` of the tiny synthetic catalogue."""
    return image_pairs


def _X(estimator, data):
    pairs, _ = data
    return pairs if _is_pairwise(estimator) else pairs[:, 0]


def _fit(estimator, data, X=None):
    X = _X(estimator, data) if X is None else X
    return clone(estimator).fit(X, data[1] if _is_classifier(estimator) else None)


def _methods(estimator):
    names = ["predict", "predict_proba", "decision_function", "transform"]
    return [name for name in names if hasattr(estimator, name)]


def _outputs(estimator, X):
    return {name: getattr(estimator, name)(X) for name in _methods(estimator)}


def _assert_outputs_close(first, second):
    assert first.keys() == second.keys()
    for name in first:
        if first[name].dtype.kind in "fc":
            assert_allclose(first[name], second[name], rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            assert_array_equal(first[name], second[name], err_msg=name)


every_estimator = pytest.mark.parametrize("estimator", ESTIMATORS, ids=IDS)


@every_estimator
def test_fit_and_score_take_y(estimator):
    # check_fit_score_takes_y: y is the second argument wherever there is one
    import inspect

    for name in ["fit", "score", "partial_fit", "fit_predict", "fit_transform"]:
        if hasattr(estimator, name):
            arguments = list(inspect.signature(getattr(estimator, name)).parameters)
            assert arguments[:2] == ["X", "y"], name


@pytest.mark.parametrize("estimator", [e for e in ESTIMATORS if hasattr(e, "transform")],
                         ids=[n for e, n in zip(ESTIMATORS, IDS) if hasattr(e, "transform")])
def test_fit_transform_equals_fit_then_transform(estimator, data):
    # check_transformer_general
    X = _X(estimator, data)
    assert_allclose(clone(estimator).fit_transform(X), _fit(estimator, data).transform(X),
                    rtol=1e-6)


@every_estimator
def test_fit_returns_self_and_then_is_fitted(estimator, data):
    # check_estimators_fit_returns_self, check_fit_check_is_fitted
    unfitted = clone(estimator)
    for name in _methods(unfitted):
        with pytest.raises(NotFittedError):
            getattr(unfitted, name)(_X(estimator, data))
    X = _X(estimator, data)
    assert unfitted.fit(X, data[1] if _is_classifier(estimator) else None) is unfitted
    for name in _methods(unfitted):
        getattr(unfitted, name)(X)


@every_estimator
def test_fit_changes_no_parameter(estimator, data):
    # check_estimators_overwrite_params, check_dont_overwrite_parameters
    unfitted = clone(estimator)

    def hashes(params):
        # An accelerator is a resource that registers what it prepares, as a
        # Dask client would: the estimator must keep the same one, not an equal one.
        return {name: id(value) if name == "accelerator" else joblib.hash(value)
                for name, value in params.items()}

    before = hashes(unfitted.get_params())
    public_before = {key for key in vars(unfitted) if not key.endswith("_")
                     and not key.startswith("_")}
    fitted = unfitted.fit(_X(estimator, data), data[1] if _is_classifier(estimator) else None)
    assert hashes(fitted.get_params()) == before
    public_after = {key for key in vars(fitted) if not key.endswith("_")
                    and not key.startswith("_")}
    assert public_after == public_before


@every_estimator
def test_prediction_changes_nothing_on_the_estimator(estimator, data):
    # check_dict_unchanged: no attribute added or replaced by predict/transform
    fitted = _fit(estimator, data)
    X = _X(estimator, data)
    for name in _methods(fitted):
        before = dict(vars(fitted))
        getattr(fitted, name)(X)
        assert vars(fitted).keys() == before.keys(), name
        assert all(vars(fitted)[key] is value for key, value in before.items()), name


@every_estimator
def test_fit_is_idempotent(estimator, data):
    # check_fit_idempotent: fit(X).fit(X) predicts as fit(X)
    X = _X(estimator, data)
    once = _fit(estimator, data)
    expected = _outputs(once, X)
    twice = once.fit(X, data[1] if _is_classifier(estimator) else None)
    _assert_outputs_close(_outputs(twice, X), expected)


@every_estimator
def test_outputs_follow_the_order_and_subsets_of_the_samples(estimator, data):
    # check_methods_sample_order_invariance, check_methods_subset_invariance
    fitted = _fit(estimator, data)
    X = _X(estimator, data)
    expected = _outputs(fitted, X)
    order = np.random.RandomState(0).permutation(len(X))
    permuted = _outputs(fitted, X[order])
    _assert_outputs_close(permuted, {key: value[order] for key, value in expected.items()})
    batches = [_outputs(fitted, X[start:start + 7]) for start in range(0, len(X), 7)]
    joined = {name: np.concatenate([batch[name] for batch in batches]) for name in expected}
    _assert_outputs_close(joined, expected)


@every_estimator
def test_pipeline_gives_the_same_outputs(estimator, data):
    # check_pipeline_consistency
    X, y = _X(estimator, data), data[1] if _is_classifier(estimator) else None
    alone = _fit(estimator, data)
    pipeline = make_pipeline(clone(estimator)).fit(X, y)
    for name in _methods(alone):
        if hasattr(pipeline, name):
            assert_allclose(np.asarray(getattr(pipeline, name)(X), dtype=float),
                            np.asarray(getattr(alone, name)(X), dtype=float), rtol=1e-5)


@every_estimator
def test_pickle_round_trip_keeps_the_outputs(estimator, data):
    # check_estimators_pickle
    fitted = _fit(estimator, data)
    X = _X(estimator, data)
    restored = pickle.loads(pickle.dumps(fitted))
    _assert_outputs_close(_outputs(restored, X), _outputs(fitted, X))


@every_estimator
@pytest.mark.parametrize("container", ["readonly_memmap", "readonly_objects", "not_an_array",
                                       "list", "frame"])
def test_every_container_of_paths_gives_the_same_outputs(estimator, data, container,
                                                         tmp_path):
    # check_readonly_memmap_input, check_*_data_not_an_array, on paths
    X = _X(estimator, data)
    fitted = _fit(estimator, data)
    expected = _outputs(fitted, X)
    if container == "readonly_memmap":
        strings = np.asarray(X, dtype="U")
        path = tmp_path / "paths.npy"
        np.save(path, strings)
        other = np.load(path, mmap_mode="r")
        assert not other.flags.writeable
    elif container == "readonly_objects":
        other = np.asarray(X, dtype=object).copy()
        other.setflags(write=False)
    elif container == "not_an_array":
        other = _NotAnArray(X)
    elif container == "list":
        other = X.tolist()
    else:
        other = pd.DataFrame(X) if X.ndim == 2 else pd.Series(X)
    _assert_outputs_close(_outputs(fitted, other), expected)
    refitted = _fit(estimator, data, X=other)
    _assert_outputs_close(_outputs(refitted, X), expected)


@pytest.mark.parametrize("estimator", [e for e in ESTIMATORS if _is_classifier(e)],
                         ids=[n for e, n in zip(ESTIMATORS, IDS) if _is_classifier(e)])
@pytest.mark.parametrize("labels, match_label", [
    (("other", "same"), "same"),
    ((0, 1), 1),
    ((3, -2), -2),  # the match label is the smaller one
    ((False, True), True),
])
def test_classes_and_decisions_follow_the_labels(estimator, data, labels, match_label):
    # check_classifiers_classes, check_decision_proba_consistency
    X, y = data
    other = [label for label in labels if label != match_label][0]
    y_labelled = np.where(y == 1, match_label, other)
    clf = clone(estimator).set_params(match_label=match_label).fit(X, y_labelled)
    assert_array_equal(clf.classes_, np.unique(y_labelled))
    predicted = clf.predict(X)
    assert set(predicted.tolist()) <= set(labels)
    proba = clf.predict_proba(X)
    decision = clf.decision_function(X)
    # decision_function is signed for classes_[1], as predict_proba's column 1
    order = np.argsort(decision, kind="stable")
    assert np.all(np.diff(proba[order, 1]) >= -1e-6)
    match_column = list(clf.classes_).index(match_label)
    assert_array_equal(predicted == match_label, proba[:, match_column] > clf.threshold)


@every_estimator
def test_input_feature_semantics(estimator, data):
    # check_n_features_in, check_dataframe_column_names_consistency
    X = _X(estimator, data)
    columns = ["query", "response"] if X.ndim == 2 else ["image"]
    frame = pd.DataFrame(X.reshape(len(X), -1), columns=columns)
    fitted = _fit(estimator, data, X=frame if X.ndim == 2 else frame["image"].to_frame())
    assert fitted.n_features_in_ == len(columns)
    assert_array_equal(fitted.feature_names_in_, columns)
    plain = _fit(estimator, data)
    assert plain.n_features_in_ == len(columns)
    assert not hasattr(plain, "feature_names_in_")


def test_accelerated_classifier_is_checked_when_accelerate_is_installed():
    pytest.importorskip("accelerate")
    assert "AcceleratedImagePairClassifier" in IDS
