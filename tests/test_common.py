"""scikit-learn's estimator checks on both estimators (tiny backbone).

Both estimators take image *paths*. scikit-learn's checks build their inputs
with ``make_blobs`` and friends: numeric arrays, which are not paths. Every
check that fails only for that reason is listed below with that reason, and
``xfail_strict=True`` makes a listed check that starts to pass fail the suite,
so the lists stay exact. What those checks would have covered is tested on
image paths in ``test_classifier.py`` and ``test_embedder.py`` (fit returns
self, NotFittedError, clone, pickle round trip, X never modified,
``n_features_in_``, ...).
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier

from conftest import TINY_IMAGE_SIZE, TINY_SWIN

TINY = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))

ESTIMATORS = [
    ImagePairClassifier(max_epochs=1, train_split=None, random_state=0, **TINY),
    ImageEmbedder(**TINY),
]

NUMERIC = "feeds numeric arrays; X must hold image paths"
SPARSE = "feeds a sparse numeric matrix; X must hold image paths"

# Checks of the scikit-learn API (parametrize_with_checks(legacy=False)).
API_FAILURES = {
    "check_dont_overwrite_parameters": NUMERIC,
    "check_estimators_fit_returns_self": NUMERIC,
    "check_estimators_overwrite_params": NUMERIC,
    "check_fit_score_takes_y": NUMERIC,
    "check_n_features_in_after_fitting": NUMERIC,
    "check_positive_only_tag_during_fit": NUMERIC,
    "check_readonly_memmap_input": NUMERIC,
}
CLASSIFIER_API_FAILURES = {
    **API_FAILURES,
    "check_no_attributes_set_in_init":
        "skorch's NeuralNet.__init__ sets history_, initialized_ and virtual_params_",
}

# Checks that also fail for the reasons above, run by the legacy suite.
LEGACY_FAILURES = {
    "check_complex_data": NUMERIC,
    "check_dict_unchanged": NUMERIC,
    "check_dtype_object": NUMERIC,
    "check_estimator_sparse_array": SPARSE,
    "check_estimator_sparse_matrix": SPARSE,
    "check_estimators_dtypes": NUMERIC,
    "check_estimators_empty_data_messages":
        "expects numpy's wording for an empty feature axis; ours says X must have 2 columns",
    "check_estimators_nan_inf": NUMERIC,
    "check_estimators_pickle": NUMERIC,
    "check_f_contiguous_array_estimator": NUMERIC,
    "check_fit2d_1feature": NUMERIC,
    "check_fit2d_1sample": NUMERIC,
    "check_fit2d_predict1d": NUMERIC,
    "check_fit_check_is_fitted": NUMERIC,
    "check_fit_idempotent": NUMERIC,
    "check_methods_sample_order_invariance": NUMERIC,
    "check_methods_subset_invariance": NUMERIC,
    "check_n_features_in": NUMERIC,
    "check_pipeline_consistency": NUMERIC,
}
CLASSIFIER_FAILURES = {
    **CLASSIFIER_API_FAILURES,
    **LEGACY_FAILURES,
    "check_classifier_data_not_an_array": NUMERIC,
    "check_classifier_not_supporting_multiclass": NUMERIC,
    "check_classifiers_classes": NUMERIC,
    "check_classifiers_one_label": NUMERIC,
    "check_classifiers_one_label_sample_weights": NUMERIC,
    "check_classifiers_regression_target": "numeric X is rejected before y is looked at",
    "check_classifiers_train": NUMERIC,
    "check_decision_proba_consistency": NUMERIC,
    "check_estimators_partial_fit_n_features": NUMERIC,
    "check_requires_y_none": NUMERIC,
    "check_set_params":
        "skorch's set_params rebuilds callbacks and rejects the check's arbitrary values",
    "check_supervised_y_2d": NUMERIC,
}
EMBEDDER_FAILURES = {
    **API_FAILURES,
    **LEGACY_FAILURES,
    "check_estimator_sparse_tag": SPARSE,
    "check_fit1d": NUMERIC,
    "check_transformer_data_not_an_array": NUMERIC,
    "check_transformer_general": NUMERIC,
    "check_transformer_preserve_dtypes": NUMERIC,
}


def _failures(estimator):
    return CLASSIFIER_FAILURES if isinstance(estimator, ImagePairClassifier) else EMBEDDER_FAILURES


def _api_failures(estimator):
    return CLASSIFIER_API_FAILURES if isinstance(estimator, ImagePairClassifier) else API_FAILURES


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_failures, xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@parametrize_with_checks(ESTIMATORS, legacy=False, expected_failed_checks=_api_failures,
                         xfail_strict=True)
def test_sklearn_api_checks(estimator, check):
    check(estimator)
