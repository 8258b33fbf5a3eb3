import os
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from sklearn_imgpair import ImageEmbedder
from sklearn_imgpair._embedder import search_embedder
from sklearn_imgpair._io import embedding_cache as _cache

from conftest import TINY_IMAGE_SIZE, TINY_SWIN


def _embedder(**params):
    defaults = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))
    return ImageEmbedder(**{**defaults, **params})


@pytest.fixture(autouse=True)
def _empty_process_cache():
    _cache._PROCESS_STORE.clear()
    yield
    _cache._PROCESS_STORE.clear()


@pytest.fixture
def paths(image_pairs):
    X, _ = image_pairs
    return np.unique(X.ravel())[:8]


@pytest.mark.parametrize(
    "make_X",
    [list, np.asarray, pd.Series, lambda p: np.asarray(p).reshape(-1, 1),
     lambda p: pd.DataFrame({"image": p})],
    ids=["list", "array", "series", "column", "frame"],
)
def test_transform_accepts_every_input_form(paths, make_X):
    embedder = _embedder().fit()
    expected = embedder.transform(list(paths))
    result = embedder.transform(make_X(list(paths)))
    assert result.shape == (len(paths), embedder.embedding_dim_)
    assert result.dtype == np.float32
    assert_allclose(result, expected, rtol=0, atol=0)
    assert_allclose(np.linalg.norm(result, axis=1), 1.0, rtol=1e-5)


def test_embeddings_equal_the_classifiers_own(fitted_clf, image_pairs):
    X, _ = image_pairs
    embedder = ImageEmbedder(classifier=fitted_clf).fit()
    first, second = embedder.transform(X[:, 0]), embedder.transform(X[:, 1])
    cosine = torch.from_numpy((first * second).sum(axis=1))
    logits = fitted_clf.module_.head(cosine).detach().numpy()
    expected = fitted_clf.decision_function(X)
    # atanh(cosine) turns float rounding of cosines near 1 into larger logit differences.
    assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    assert embedder.embedding_dim_ == fitted_clf.embedding_dim_


def test_embedder_copies_the_classifier_network(fitted_clf):
    embedder = ImageEmbedder(classifier=fitted_clf).fit()
    assert embedder.module_ is not fitted_clf.module_
    assert embedder.image_size_ == fitted_clf.image_size_


def test_a_search_embedder_copies_the_classifier_or_clones_the_embedder(fitted_clf):
    from sklearn.frozen import FrozenEstimator

    embedder, threshold = search_embedder(None, FrozenEstimator(fitted_clf))
    assert embedder.classifier is fitted_clf and threshold == fitted_clf.threshold
    # The batch size of prediction: chosen for the device, not the training batch size.
    assert (embedder.batch_size, embedder.precision, embedder.num_workers) == (
        "auto", fitted_clf.precision, fitted_clf.num_workers)
    assert embedder.device == str(next(fitted_clf.module_.parameters()).device)
    given = ImageEmbedder(image_size=48, verbose=1)
    copied, threshold = search_embedder(given, None)
    assert copied is not given and copied.get_params() == given.get_params()
    assert threshold is None
    default, _ = search_embedder(None, None)
    assert default.get_params() == ImageEmbedder().get_params()
    with pytest.raises(ValueError, match="an embedder or a classifier, not both"):
        search_embedder(given, fitted_clf)


def test_each_path_is_embedded_once_and_cached(paths):
    embedder = _embedder().fit()
    seen = []
    embedder.module_.backbone.register_forward_hook(
        lambda module, args, output: seen.append(args[0].shape[0]))
    repeated = np.concatenate([paths, paths, paths[:3]])
    first = embedder.transform(repeated)
    assert sum(seen) == len(paths)
    twin = clone(embedder).fit()  # same seed, same weights: same fingerprint
    twin.module_.backbone.register_forward_hook(
        lambda module, args, output: seen.append(args[0].shape[0]))
    assert_allclose(twin.transform(repeated), first)
    assert sum(seen) == len(paths)  # the clone reused the cached vectors


def test_cache_misses_after_the_file_changes(tmp_path):
    from PIL import Image

    path = tmp_path / "image.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(path)
    embedder = _embedder().fit()
    red = embedder.transform([str(path)])
    Image.new("RGB", (32, 32), (0, 0, 255)).save(path)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    blue = embedder.transform([str(path)])
    assert not np.allclose(red, blue)


def test_disk_cache_is_shared_across_processes_and_sessions(tmp_path, paths):
    embedder = _embedder(memory=str(tmp_path / "cache")).fit()
    first = embedder.transform(paths)
    _cache._PROCESS_STORE.clear()  # as in a new process
    reader = _embedder(memory=str(tmp_path / "cache")).fit()
    reader.module_.backbone.register_forward_hook(
        lambda *args: pytest.fail("embedded again despite the disk cache"))
    assert_allclose(reader.transform(paths), first)


def test_disk_cache_accepts_joblib_memory(tmp_path, paths):
    from joblib import Memory

    embedder = _embedder(memory=Memory(str(tmp_path / "joblib"), verbose=0)).fit()
    embedder.transform(paths)
    assert any((tmp_path / "joblib").rglob("*.npy"))


def test_different_weights_do_not_share_cache_entries(paths):
    first = _embedder(random_state=0).fit().transform(paths)
    second = _embedder(random_state=1).fit().transform(paths)
    assert not np.allclose(first, second)


def test_feature_names_and_pandas_output(paths):
    embedder = _embedder().fit(pd.DataFrame({"image": paths}))
    names = embedder.get_feature_names_out()
    assert names.tolist() == [f"imageembedder{i}" for i in range(embedder.embedding_dim_)]
    frame = embedder.set_output(transform="pandas").transform(pd.DataFrame({"image": paths}))
    assert isinstance(frame, pd.DataFrame)
    assert frame.columns.tolist() == names.tolist()


def test_errors_name_the_row(paths, tmp_path):
    embedder = _embedder().fit()
    with pytest.raises(FileNotFoundError, match=r"X\[1\]: .*missing.png"):
        embedder.transform([paths[0], str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="one column of image paths"):
        embedder.transform(np.array([paths[:2], paths[2:4]]).T)
    with pytest.raises(TypeError, match="single str"):
        embedder.transform(paths[0])


def test_not_fitted_clone_and_pickle(paths):
    embedder = _embedder()
    with pytest.raises(NotFittedError):
        embedder.transform(paths)
    fitted = embedder.fit()
    assert fitted is embedder
    assert not hasattr(clone(fitted), "module_")
    restored = pickle.loads(pickle.dumps(fitted))
    assert_allclose(restored.transform(paths), fitted.transform(paths), rtol=0, atol=0)


def test_transform_does_not_modify_X(paths):
    X = pd.Series(list(paths))
    original = X.copy()
    _embedder().fit().transform(X)
    pd.testing.assert_series_equal(X, original)


def test_cache_false_recomputes(paths):
    seen = []
    for _ in range(2):
        embedder = _embedder(cache=False).fit()
        embedder.module_.backbone.register_forward_hook(
            lambda module, args, output: seen.append(args[0].shape[0]))
        embedder.transform(paths)
    assert sum(seen) == 2 * len(paths)
    assert len(_cache._PROCESS_STORE._items) == 0


# ----------------------------------------------------------------------
# scikit-learn's contract: tags, feature names, the data-independent checks
# ----------------------------------------------------------------------


def test_tags_say_one_column_of_strings_and_float32_output():
    tags = _embedder().__sklearn_tags__()
    assert tags.input_tags.one_d_array and tags.input_tags.string
    assert not tags.input_tags.two_d_array
    assert tags.transformer_tags.preserves_dtype == []  # float32, whatever X is
    assert tags.requires_fit


@pytest.mark.parametrize(
    "make_X",
    [list, lambda p: np.asarray(p).reshape(-1, 1), lambda p: pd.DataFrame({"image": p})],
    ids=["list", "column", "frame"],
)
def test_n_features_in_is_one_when_fit_sees_X(paths, make_X):
    assert _embedder().fit(make_X(list(paths))).n_features_in_ == 1


def test_fit_without_X_defines_no_input_features(paths):
    # scikit-learn defines n_features_in_ only when fit saw X.
    embedder = _embedder().fit()
    assert not hasattr(embedder, "n_features_in_")
    assert not hasattr(embedder, "feature_names_in_")


@pytest.mark.parametrize("X", [None, "list"])
def test_refit_forgets_the_feature_names(paths, X):
    embedder = _embedder().fit(pd.DataFrame({"image": paths}))
    assert embedder.feature_names_in_.tolist() == ["image"]
    embedder.fit(None if X is None else list(paths))
    assert not hasattr(embedder, "feature_names_in_")
    assert hasattr(embedder, "n_features_in_") == (X is not None)


def test_transform_rejects_another_column_name(paths):
    embedder = _embedder().fit(pd.DataFrame({"image": paths}))
    with pytest.raises(ValueError, match="feature names should match"):
        embedder.transform(pd.DataFrame({"other": paths}))


def test_transform_warns_about_feature_names_as_scikit_learn_does(paths):
    named = _embedder().fit(pd.DataFrame({"image": paths}))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        named.transform(list(paths))
    unnamed = _embedder().fit(list(paths))
    with pytest.warns(UserWarning, match="X has feature names, but ImageEmbedder was fitted "
                                         "without feature names"):
        unnamed.transform(pd.DataFrame({"image": paths}))


def test_transform_after_fit_without_X_checks_no_feature_names(paths):
    # fit() saw no X, so there is nothing to compare X's column names to.
    embedder = _embedder().fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedder.transform(pd.DataFrame({"image": paths}))
        embedder.transform(list(paths))


def test_save_and_load_keep_the_input_features(paths, tmp_path):
    named = _embedder(cache=False).fit(pd.DataFrame({"image": paths}))
    loaded = ImageEmbedder.load(named.save(tmp_path / "named.safetensors"))
    assert loaded.feature_names_in_.tolist() == ["image"] and loaded.n_features_in_ == 1
    with pytest.raises(ValueError, match="feature names should match"):
        loaded.transform(pd.DataFrame({"other": paths}))
    blind = _embedder(cache=False).fit()
    loaded = ImageEmbedder.load(blind.save(tmp_path / "blind.safetensors"))
    assert not hasattr(loaded, "n_features_in_") and not hasattr(loaded, "feature_names_in_")


def test_save_and_load_keep_n_features_in_of_a_list(paths, tmp_path):
    fitted = _embedder(cache=False).fit(list(paths))
    loaded = ImageEmbedder.load(fitted.save(tmp_path / "list.safetensors"))
    assert loaded.n_features_in_ == 1


# The checks of scikit-learn's API that need no data, called directly as
# scikit-learn's own test_common.py calls them.
