"""Tests of the speed settings: decode once, workers, chunked scoring, precision, batch size."""

import copy

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image
from sklearn.exceptions import NotFittedError

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier, _matching
from sklearn_imgpair._embedder import search_embedder
from sklearn_imgpair._images import datasets as _datasets
from sklearn_imgpair._images import pixels as _pixels
from sklearn_imgpair._images.batch_size import inference_batch_size
from sklearn_imgpair._images.datasets import ImageDataset
from sklearn_imgpair._images.decode import load_image
from sklearn_imgpair._matching import score_pairs
from sklearn_imgpair._nn import device as _runtime
from sklearn_imgpair._nn.device import (
    check_precision,
    default_num_workers,
    loadable_precision,
    loader_kwargs,
)
from sklearn_imgpair._nn.siamese import SiameseNet

from conftest import TINY_IMAGE_SIZE, TINY_SWIN, make_tiny_classifier

BF16_ON_ANY_CPU = pytest.mark.filterwarnings("ignore:precision='bf16'")


@pytest.fixture(scope="module")
def clf(image_pairs):
    """One epoch on the tiny Swin, decoding in this process."""
    X, y = image_pairs
    return make_tiny_classifier(max_epochs=1, num_workers=0).fit(X, y)


# ----------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt, decoded_side", [("JPEG", 64), ("PNG", 512)])
def test_load_image_decodes_jpeg_at_the_needed_scale(tmp_path, monkeypatch, fmt, decoded_side):
    pixels = np.random.default_rng(0).integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    path = tmp_path / f"photo.{fmt.lower()}"
    Image.fromarray(pixels).save(path, fmt)
    sizes = []
    original = _pixels._to_rgb

    def recording_to_rgb(image):
        sizes.append(image.size)
        return original(image)

    monkeypatch.setattr(_pixels, "_to_rgb", recording_to_rgb)
    image = load_image(path, 64)
    assert image.shape == (3, 64, 64)
    assert sizes == [(decoded_side, decoded_side)]
    sizes.clear()
    load_image(path.read_bytes(), 64)  # the bytes of the file: the same
    assert sizes == [(decoded_side, decoded_side)]


def test_fit_decodes_each_training_image_once(image_pairs, decode_counts):
    X, y = image_pairs
    counts = decode_counts
    make_tiny_classifier(max_epochs=2, num_workers=0).fit(X, y)
    assert set(counts) == set(X.ravel())
    assert max(counts.values()) == 1


def test_predict_proba_decodes_each_distinct_image_once(clf, image_pairs, decode_counts):
    X, _ = image_pairs
    X = np.concatenate([X, X[::-1]])
    counts = decode_counts
    clf.predict_proba(X)
    assert set(counts) == set(X.ravel())
    assert max(counts.values()) == 1


# ----------------------------------------------------------------------
# workers and pinned memory
# ----------------------------------------------------------------------


@pytest.mark.parametrize("device, cores, expected", [
    ("cpu", 2, 0), ("cpu", 7, 0), ("cpu", 16, 2), ("cuda", 2, 1), ("cuda", 12, 11),
    ("cuda", 64, 16),
])
def test_default_num_workers_is_sized_to_the_machine(monkeypatch, device, cores, expected):
    monkeypatch.setattr(_runtime, "available_cores", lambda: cores)
    assert default_num_workers(device) == expected


def test_loader_kwargs_start_no_more_workers_than_batches(monkeypatch):
    monkeypatch.setattr(_runtime, "available_cores", lambda: 64)
    assert loader_kwargs("cuda", None, 100, 32) == {"num_workers": 3, "pin_memory": True}
    assert loader_kwargs("cuda", None, 32, 32)["num_workers"] == 0
    assert loader_kwargs("cpu", None, 10_000, 32) == {"num_workers": 8, "pin_memory": False}
    assert loader_kwargs("cpu", 3, 1, 32)["num_workers"] == 3


@pytest.mark.parametrize("params, expected", [
    (dict(num_workers=0), 0),
    (dict(num_workers=2), 2),
    (dict(num_workers=2, iterator_valid__num_workers=1), 1),  # skorch's own setting wins
])
def test_prediction_loader_uses_num_workers(image_pairs, params, expected):
    X, y = image_pairs[0][:12], image_pairs[1][:12]
    loaders = []

    class RecordingLoader(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaders.append(self)

    clf = make_tiny_classifier(max_epochs=1, train_split=None, pair_mining="none",
                               iterator_valid=RecordingLoader, **params).fit(X, y)
    loaders.clear()
    clf.predict_proba(X)
    [loader] = loaders  # the distinct images, read by one loader
    assert isinstance(loader.dataset, ImageDataset) and len(loader.dataset) == len(np.unique(X))
    assert loader.num_workers == expected
    assert not loader.pin_memory


def test_decoding_workers_give_the_same_predictions(clf, image_pairs):
    X = image_pairs[0][:24]
    with_workers = copy.deepcopy(clf).set_params(num_workers=2, iterator_valid__batch_size=8)
    assert_allclose(with_workers.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    params = dict(classifier=clf, cache=False, batch_size=8)
    embedder = ImageEmbedder(num_workers=2, **params).fit()
    single = ImageEmbedder(num_workers=0, **params).fit()
    assert_allclose(embedder.transform(X[:, 0]), single.transform(X[:, 0]), rtol=1e-6)


def test_cuda_loaders_pin_memory(image_pairs):
    X, y = image_pairs
    clf = make_tiny_classifier(device="cuda", num_workers=0, pair_mining="none")
    images = ImageDataset(np.unique(X.ravel()), TINY_IMAGE_SIZE)
    pairs = _datasets.PairDataset(X, y.astype(np.float32), image_size=TINY_IMAGE_SIZE)
    assert clf.get_iterator(images).pin_memory
    assert clf.get_iterator(pairs, training=True).pin_memory
    assert not make_tiny_classifier(device="cuda", iterator_valid__pin_memory=False
                                    ).get_iterator(images).pin_memory


# ----------------------------------------------------------------------
# streaming scores
# ----------------------------------------------------------------------


def test_score_pairs_in_chunks_equals_scoring_at_once():
    module = SiameseNet(torch.nn.Identity(), mean=[0.0] * 3, std=[1.0] * 3)
    embeddings = torch.nn.functional.normalize(torch.randn(7, 5), dim=-1)
    index = np.random.default_rng(0).integers(0, 7, size=(23, 2))
    expected = 10.0 * (embeddings[index[:, 0]] * embeddings[index[:, 1]]).sum(-1) - 5.0

    def similarity(embeddings_1, embeddings_2):
        with torch.no_grad():
            return module.similarity(embeddings_1, embeddings_2).numpy()

    for chunk_size in (1, 4, 23, 100):
        assert_allclose(score_pairs(embeddings, index, similarity, chunk_size=chunk_size),
                        expected.numpy(), rtol=1e-5, atol=1e-6)


def test_predict_proba_never_gathers_more_than_a_chunk_of_pairs(clf, image_pairs, monkeypatch):
    X, _ = image_pairs
    expected = clf.predict_proba(X)
    monkeypatch.setattr(_matching, "SCORE_CHUNK_SIZE", 7)
    sizes = []
    original = type(clf.module_).similarity

    def recording_similarity(module, embeddings_1, embeddings_2):
        sizes.append(len(embeddings_1))
        return original(module, embeddings_1, embeddings_2)

    monkeypatch.setattr(type(clf.module_), "similarity", recording_similarity)
    assert_allclose(clf.predict_proba(X), expected, rtol=1e-6)
    assert max(sizes) == 7
    assert sum(sizes) == len(X)


# ----------------------------------------------------------------------
# precision
# ----------------------------------------------------------------------


def test_check_precision_rejects_fp16_on_cpu():
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        check_precision("fp16", "cpu")


def test_check_precision_warns_where_bf16_is_emulated(monkeypatch):
    monkeypatch.setattr(_runtime, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="bfloat16 is emulated"):
        check_precision("bf16", "cpu")


def test_check_precision_rejects_other_devices():
    with pytest.raises(ValueError, match="works on 'cpu' and 'cuda'"):
        check_precision("bf16", "meta")


@pytest.mark.parametrize("make", [
    lambda: make_tiny_classifier(precision="fp8"),
    lambda: ImageEmbedder(pretrained=False, precision="fp8"),
])
def test_precision_is_validated_in_fit(make, image_pairs):
    X, y = image_pairs
    estimator = make()
    with pytest.raises(ValueError, match="precision"):
        estimator.fit(X, y) if hasattr(estimator, "predict") else estimator.fit()


def test_fp16_is_refused_on_cpu_in_fit(image_pairs):
    X, y = image_pairs
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        make_tiny_classifier(precision="fp16").fit(X, y)
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=TINY_SWIN,
                      precision="fp16").fit()


def _linear_output_dtypes(module):
    dtypes = set()
    for layer in module.backbone.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.register_forward_hook(lambda _, __, out: dtypes.add(out.dtype))
    return dtypes


@BF16_ON_ANY_CPU
def test_bf16_embedder_runs_the_backbone_in_bf16_and_agrees_with_fp32(image_pairs):
    paths = np.unique(image_pairs[0].ravel())
    params = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=TINY_SWIN,
                  cache=False)
    fp32 = ImageEmbedder(**params).fit()
    bf16 = ImageEmbedder(precision="bf16", **params).fit()
    dtypes = _linear_output_dtypes(bf16.module_)
    vectors_32, vectors_16 = fp32.transform(paths), bf16.transform(paths)
    assert dtypes == {torch.bfloat16}
    assert vectors_16.dtype == np.float32
    assert_allclose(np.linalg.norm(vectors_16, axis=1), 1.0, rtol=1e-5)
    assert not np.array_equal(vectors_16, vectors_32)
    assert (vectors_16 * vectors_32).sum(axis=1).min() > 0.99


@BF16_ON_ANY_CPU
def test_embedding_cache_keeps_precisions_apart(image_pairs):
    paths = image_pairs[0][:4, 0]
    params = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=TINY_SWIN)
    fp32 = ImageEmbedder(**params).fit()
    bf16 = ImageEmbedder(precision="bf16", **params).fit()
    assert fp32._embedding_cache().fingerprint != bf16._embedding_cache().fingerprint
    assert not np.array_equal(fp32.transform(paths), bf16.transform(paths))
    # Set after fit, as the command line's --precision does on a loaded search: same keys.
    switched = ImageEmbedder(**params).fit().set_params(precision="bf16")
    assert switched._embedding_cache().fingerprint == bf16._embedding_cache().fingerprint
    assert_array_equal(switched.transform(paths), bf16.transform(paths))
    uncached = ImageEmbedder(cache=False, **params).fit().set_params(precision="bf16")
    assert_array_equal(uncached.transform(paths), bf16.transform(paths))  # computed in bf16


@BF16_ON_ANY_CPU
def test_bf16_classifier_trains_and_predicts_in_bf16(image_pairs):
    X, y = image_pairs
    clf = make_tiny_classifier(max_epochs=1, precision="bf16", num_workers=0).fit(X, y)
    dtypes = _linear_output_dtypes(clf.module_)
    proba = clf.predict_proba(X)
    assert dtypes == {torch.bfloat16}
    assert proba.dtype == np.float64 and np.isfinite(proba).all()
    assert np.isfinite(clf.history[:, "train_loss"]).all()


def test_fp16_training_scales_the_loss(image_pairs, monkeypatch):
    # fp16 is for CUDA; CPU autocast runs it too, which lets the scaling be tested here.
    from sklearn_imgpair._training import precision

    # fp16 on CPU is refused by the precision check; the loss scaler is built anyway.
    monkeypatch.setattr(precision, "check_precision", lambda precision, device: None)
    X, y = image_pairs[0][:32], image_pairs[1][:32]
    clf = make_tiny_classifier(max_epochs=1, precision="fp16", train_split=None,
                               pair_mining="none", num_workers=0)
    before = clf.initialize().module_.head.bias.item()
    scaled = []
    original = clf.grad_scaler_.scale
    monkeypatch.setattr(clf.grad_scaler_, "scale",
                        lambda loss: scaled.append(loss.item()) or original(loss))
    clf.partial_fit(X, y)
    assert len(scaled) == len(clf.history[-1, "batches"])
    assert clf.grad_scaler_.get_scale() > 1.0
    assert clf.module_.head.bias.item() != before
    assert np.isfinite(clf.predict_proba(X)).all()


def test_loadable_precision_falls_back_to_fp32_where_the_device_cannot():
    with pytest.warns(UserWarning, match="Loading the model with precision='fp32'"):
        assert loadable_precision("fp16", "cpu") == "fp32"
    assert loadable_precision("fp32", "cpu") == "fp32"


@BF16_ON_ANY_CPU
def test_saved_embedder_keeps_its_precision(image_pairs, tmp_path):
    paths = image_pairs[0][:4, 0]
    embedder = ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                             model_kwargs=TINY_SWIN, precision="bf16", cache=False).fit()
    embedder.save(tmp_path / "embedder.model")
    loaded = ImageEmbedder.load(tmp_path / "embedder.model")
    assert loaded.precision == "bf16"
    assert loaded._fingerprint == embedder._fingerprint
    assert_allclose(loaded.transform(paths), embedder.transform(paths), rtol=1e-6)


def _bf16_cpu(monkeypatch, native=True):
    """Make this CPU compute bfloat16 natively (or not) as far as precision="auto" knows."""
    monkeypatch.setattr(_runtime, "cpu_has_fast_bf16", lambda: native)


def _backbone_outputs(module):
    """``(training, dtype)`` of every linear layer output of the backbone, as it runs."""
    seen = []
    for layer in module.backbone.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.register_forward_hook(
                lambda layer, _, out: seen.append((layer.training, out.dtype)))
    return seen


@pytest.mark.parametrize("make", [
    lambda: make_tiny_classifier(max_epochs=1, train_split=None, pair_mining="none"),
    lambda: ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=TINY_SWIN),
])
def test_precision_is_a_fitted_attribute_that_follows_set_params(make, image_pairs,
                                                                 monkeypatch):
    _bf16_cpu(monkeypatch, native=False)
    X, y = image_pairs[0][:24], image_pairs[1][:24]
    estimator = make()
    assert not hasattr(estimator, "precision_")
    with pytest.raises(NotFittedError, match="precision_"):
        estimator.precision_  # noqa: B018
    estimator.fit(X, y) if hasattr(estimator, "predict") else estimator.fit()
    assert (estimator.precision, estimator.precision_) == ("auto", "fp32")
    assert estimator.set_params(precision="bf16").precision_ == "bf16"
    _bf16_cpu(monkeypatch, native=True)
    assert estimator.set_params(precision="auto").precision_ == "bf16"


@pytest.mark.parametrize("freeze_backbone", [False, True])
def test_auto_precision_trains_in_fp32_and_predicts_in_bf16_where_native(
        freeze_backbone, image_pairs, monkeypatch):
    _bf16_cpu(monkeypatch)
    X, y = image_pairs[0][:48], image_pairs[1][:48]
    clf = make_tiny_classifier(max_epochs=1, freeze_backbone=freeze_backbone, num_workers=0)
    seen = _backbone_outputs(clf.initialize().module_)
    clf.partial_fit(X, y)
    training = {dtype for in_training, dtype in seen if in_training}
    validation = {dtype for in_training, dtype in seen if not in_training}
    if freeze_backbone:  # the training pairs embedded once, as training data
        assert not training and validation == {torch.float32}
    else:  # skorch's validation pass runs as prediction does
        assert training == {torch.float32} and validation == {torch.bfloat16}
    seen.clear()
    proba = clf.predict_proba(X)
    assert {dtype for _, dtype in seen} == {torch.bfloat16}
    assert clf.precision_ == "bf16" and np.isfinite(proba).all()


def test_auto_embedder_transforms_in_bf16_where_native(image_pairs, monkeypatch):
    paths = np.unique(image_pairs[0].ravel())[:6]
    params = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=TINY_SWIN,
                  cache=False)
    fp32 = ImageEmbedder(precision="fp32", **params).fit().transform(paths)
    _bf16_cpu(monkeypatch)
    auto = ImageEmbedder(**params).fit()
    seen = _backbone_outputs(auto.module_)
    vectors = auto.transform(paths)
    assert {dtype for _, dtype in seen} == {torch.bfloat16}
    assert vectors.dtype == np.float32 and not np.array_equal(vectors, fp32)
    assert (vectors * fp32).sum(axis=1).min() > 0.99


@BF16_ON_ANY_CPU
def test_auto_shares_the_embedding_cache_of_the_precision_it_runs_in(monkeypatch):
    params = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=TINY_SWIN)
    auto, fp32, bf16 = (ImageEmbedder(precision=precision, **params).fit()
                        for precision in ["auto", "fp32", "bf16"])

    def key(embedder):
        return embedder._embedding_cache().fingerprint

    _bf16_cpu(monkeypatch, native=False)
    assert key(auto) == key(fp32) != key(bf16)
    _bf16_cpu(monkeypatch, native=True)
    assert key(auto) == key(bf16) != key(fp32)


def test_a_model_saved_with_auto_precision_resolves_where_it_is_loaded(clf, tmp_path,
                                                                        monkeypatch):
    path = clf.save(tmp_path / "model.safetensors")
    embedder = ImageEmbedder(classifier=clf).fit()
    assert embedder.precision == "auto"  # the parameter is copied, not its resolution
    embedder_path = embedder.save(tmp_path / "embedder.safetensors")
    for native, expected in [(False, "fp32"), (True, "bf16")]:
        _bf16_cpu(monkeypatch, native)
        for loaded in [ImagePairClassifier.load(path), ImageEmbedder.load(embedder_path)]:
            assert (loaded.precision, loaded.precision_) == ("auto", expected)


# ----------------------------------------------------------------------
# batch size
# ----------------------------------------------------------------------


def test_the_embedder_batch_size_is_chosen_for_the_device_and_image_size(image_pairs,
                                                                         batch_sizes):
    paths = np.unique(image_pairs[0].ravel())
    params = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=TINY_SWIN,
                  cache=False, num_workers=0, device="cpu")
    embedder = ImageEmbedder(**params).fit()
    assert embedder.batch_size == "auto"
    embedder.transform(paths)
    assert batch_sizes == [inference_batch_size("cpu", TINY_IMAGE_SIZE)] == [256]
    batch_sizes.clear()
    ImageEmbedder(batch_size=5, **params).fit().transform(paths)
    assert batch_sizes == [5]


def test_prediction_batch_size_is_chosen_for_the_device_unless_iterator_valid_sets_it(
        clf, image_pairs, batch_sizes):
    X = image_pairs[0][:24]
    expected = clf.predict_proba(X)
    kind = next(clf.module_.parameters()).device.type
    assert batch_sizes == [inference_batch_size(kind, TINY_IMAGE_SIZE)] != [clf.batch_size]
    assert search_embedder(None, clf)[0].batch_size == "auto"
    batch_sizes.clear()
    # Set after fit (skorch alone would refuse it on a fitted net).
    given = copy.deepcopy(clf).set_params(iterator_valid__batch_size=5)
    assert_allclose(given.predict_proba(X), expected, rtol=1e-6)
    assert batch_sizes == [5]
    assert search_embedder(None, given)[0].batch_size == 5
    assert make_tiny_classifier(iterator_valid__batch_size=3).get_params()[
        "iterator_valid__batch_size"] == 3
