import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from sklearn_imgpair import ImageEmbedder, PairFeatures, pair_groups

from conftest import TINY_IMAGE_SIZE, TINY_SWIN


def _features():
    return PairFeatures(ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                                      model_kwargs=dict(TINY_SWIN)))


def test_pair_features_are_cosine_absdiff_and_product(image_pairs):
    X, _ = image_pairs
    transformer = _features().fit(X)
    features = transformer.transform(X[:6])
    e1 = transformer.embedder_.transform(X[:6, 0])
    e2 = transformer.embedder_.transform(X[:6, 1])
    d = transformer.embedder_.embedding_dim_
    assert features.shape == (6, 1 + 2 * d) and features.dtype == np.float32
    assert_allclose(features[:, 0], (e1 * e2).sum(axis=1), rtol=1e-5)
    assert_allclose(features[:, 1:1 + d], np.abs(e1 - e2), rtol=1e-6)
    assert_allclose(features[:, 1 + d:], e1 * e2, rtol=1e-6)
    names = transformer.get_feature_names_out()
    assert names[0] == "cosine" and names[1] == "absdiff0" and names[-1] == f"product{d - 1}"


def test_pair_features_are_symmetric_and_accept_every_form(image_pairs):
    X, _ = image_pairs
    transformer = _features().fit(X)
    expected = transformer.transform(X)
    assert_allclose(transformer.transform(X[:, ::-1]), expected, rtol=1e-6)
    assert_allclose(transformer.transform(pd.DataFrame(X)), expected)
    assert_allclose(transformer.transform(X.tolist()), expected)


def test_pair_features_reject_one_column(image_pairs):
    X, _ = image_pairs
    with pytest.raises(ValueError, match="must have 2 columns"):
        _features().fit(X[:, :1])


def test_pair_groups_are_connected_components_of_the_image_graph():
    X = [("a", "b"), ("c", "d"), ("b", "e"), ("e", "a"), ("f", "g"), ("d", "h")]
    assert_array_equal(pair_groups(X), [0, 1, 0, 0, 2, 1])


def test_pair_groups_warns_when_one_component_holds_most_pairs():
    X = [("a", "b"), ("b", "c"), ("c", "d"), ("e", "f")]
    with pytest.warns(UserWarning, match="One group holds 3 of 4 pairs"):
        assert_array_equal(pair_groups(X), [0, 0, 0, 1])


def test_pair_features_errors_name_the_row_and_column(image_pairs, tmp_path):
    X, _ = image_pairs
    transformer = _features().fit(X)
    X = X[:5].copy()
    X[3, 1] = str(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match=r"X\[3, 1\]: .*missing.png"):
        transformer.transform(X)


def test_pair_features_with_a_frozen_fitted_classifier(fitted_clf, image_pairs):
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator

    X, _ = image_pairs
    features = PairFeatures(ImageEmbedder(classifier=FrozenEstimator(fitted_clf)))
    cosine = clone(features).fit(X).transform(X)[:, 0]
    logits = fitted_clf.module_.head(torch.from_numpy(cosine)).detach().numpy()
    # atanh(cosine) turns float rounding of cosines near 1 into larger logit differences.
    assert_allclose(logits, fitted_clf.decision_function(X), rtol=1e-4, atol=1e-4)


def test_pair_features_tags_say_strings_in_float32_out():
    tags = _features().__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    assert tags.transformer_tags.preserves_dtype == []  # float32, whatever X is
