"""ColourHistogram and SiameseNet's colour_share: what the blend computes, where it goes."""

import json
import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from torch import nn

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier
from sklearn_imgpair._nn.colour import ColourHistogram
from sklearn_imgpair._nn.siamese import SiameseNet


def _hard_histogram(images, bins=8):
    """The classic histogram, counted in numpy: bin ``floor(value * bins)`` per channel."""
    codes = np.minimum((images.numpy() * bins).astype(np.int64), bins - 1)
    index = codes[:, 0] * bins * bins + codes[:, 1] * bins + codes[:, 2]
    counts = np.stack([np.bincount(row.ravel(), minlength=bins ** 3) for row in index])
    roots = np.sqrt(counts)
    return roots / np.linalg.norm(roots, axis=1, keepdims=True)


def test_pixels_at_bin_centres_give_the_classic_histogram():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 8, (3, 3, 6, 5), generator=generator)
    images = (codes.float() + 0.5) / 8
    histogram = ColourHistogram()(images)
    assert histogram.shape == (3, 512) and histogram.dtype == torch.float32
    assert_allclose(histogram.numpy(), _hard_histogram(images), atol=1e-6)


def test_a_pixel_between_two_centres_shares_its_weight_and_extremes_stay_in_the_edge_bins():
    histogram = ColourHistogram(bins=2)  # centres at 0.25 and 0.75
    # Red half-way between the centres; green and blue at the extremes 0 and 1.
    pixel = torch.tensor([0.5, 0.0, 1.0]).view(1, 3, 1, 1)
    counts = histogram(pixel).square().view(2, 2, 2)  # frequencies (unit vector squared)
    expected = torch.zeros(2, 2, 2)
    expected[0, 0, 1] = expected[1, 0, 1] = 0.5
    torch.testing.assert_close(counts, expected)
    # A small change of colour moves a little weight, never a whole pixel.
    nudged = histogram(pixel + torch.tensor([0.01, 0.0, 0.0]).view(1, 3, 1, 1))
    assert (nudged.square().view(2, 2, 2) - expected).abs().max() < 0.05


def test_histograms_are_unit_vectors_without_gradient_and_full_precision_under_autocast():
    images = torch.rand(4, 3, 8, 8, requires_grad=True)
    histogram = ColourHistogram()
    plain = histogram(images)
    assert not plain.requires_grad
    torch.testing.assert_close(plain.norm(dim=1), torch.ones(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = histogram(images.to(torch.bfloat16))
    assert autocast.dtype == torch.float32
    # bf16 inputs are rounded (8 bits of mantissa); the counting is not.
    torch.testing.assert_close(autocast, histogram(images.detach().to(torch.bfloat16)),
                               rtol=0, atol=0)
    assert (autocast - plain).abs().max() < 0.02


class _Linear(nn.Module):
    num_features = 5

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x):
        return self.layer(x.flatten(1))


def _net(**kwargs):
    torch.manual_seed(0)
    return SiameseNet(_Linear(), mean=(0.5,) * 3, std=(0.25,) * 3, **kwargs).eval()


def test_colour_share_blends_the_backbone_and_colour_cosines():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    plain, blended = _net(), _net(colour_share=0.7)
    assert (plain.embedding_dim, blended.embedding_dim) == (5, 5 + 512)
    features = plain.embed(images)
    colours = ColourHistogram()(images.float() / 255)
    embeddings = blended.embed(images)
    assert embeddings.shape == (6, 517)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(6))
    expected = 0.3 * features @ features.T + 0.7 * colours @ colours.T
    torch.testing.assert_close(embeddings @ embeddings.T, expected)
    # The head scores the blended cosine; 0 leaves the backbone's embeddings as they were.
    torch.testing.assert_close(blended(images[:3], images[3:]),
                               blended.head(expected[[0, 1, 2], [3, 4, 5]]))
    assert torch.equal(_net(colour_share=0.0).embed(images), features)


def test_the_identity_loss_gets_the_views_backbone_part_only():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    blended = _net(colour_share=0.9)
    logits, views = blended(images[:2], images[2:4], images[4:])
    torch.testing.assert_close(views, _net().embed(images[4:]))  # unit, backbone only
    torch.testing.assert_close(logits, _net(colour_share=0.9)(images[:2], images[2:4]))
    torch.testing.assert_close(blended.backbone_part(blended.embed(images)),
                               _net().embed(images))


def test_colour_share_sees_the_augmented_image_and_combines_with_test_time_flips():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    embeddings = _net(colour_share=0.5, test_time_flip=True).embed(images)
    torch.testing.assert_close(embeddings[:, :5],
                               _net(test_time_flip=True).embed(images) * 0.5 ** 0.5)
    torch.testing.assert_close(embeddings[:, 5:],
                               ColourHistogram()(images.float() / 255) * 0.5 ** 0.5)
    darken = _net(colour_share=0.5, augment=_Halve()).train()
    torch.testing.assert_close(darken.embed(images)[:, 5:],
                               ColourHistogram()(images.float() / 510) * 0.5 ** 0.5)


class _Halve(nn.Module):
    def forward(self, x):
        return x / 2


@pytest.mark.parametrize("share, error", [(1.0, ValueError), (-0.1, ValueError),
                                          (float("nan"), ValueError), (True, TypeError),
                                          ("0.5", TypeError)])
def test_invalid_colour_share_is_refused(share, error):
    with pytest.raises(error, match="colour_share must be a number in \\[0, 1\\)"):
        _net(colour_share=share)


def test_invalid_histogram_settings_and_inputs_are_refused():
    with pytest.raises(ValueError, match="bins must be an integer of at least 2; got 1"):
        ColourHistogram(bins=1)
    with pytest.raises(TypeError, match="bins must be an integer"):
        ColourHistogram(bins=8.0)
    assert ColourHistogram(bins=np.int64(4)).dim == 64
    with pytest.raises(TypeError, match="floating-point images in \\[0, 1\\]; got torch.uint8"):
        ColourHistogram()(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


def test_networks_pickled_before_the_option_have_no_colour():
    net = _net()
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    expected = net.embed(images)
    # As unpickled from a version without the option: neither the setting nor the module.
    del net.__dict__["_colour_share"]
    del net._modules["colour"]
    old = pickle.loads(pickle.dumps(net))
    assert old.colour_share == 0.0 and old.embedding_dim == 5
    torch.testing.assert_close(old.embed(images), expected)


@pytest.fixture(scope="module")
def colour_clf(image_pairs):
    from conftest import make_tiny_classifier

    X, y = image_pairs
    return make_tiny_classifier(module__colour_share=0.6, max_epochs=2).fit(X, y)


def test_classifier_with_colour_fits_saves_loads_and_embeds(colour_clf, image_pairs, tmp_path):
    X, _ = image_pairs
    d = colour_clf.module_.backbone.num_features
    assert colour_clf.embedding_dim_ == d + 512
    loaded = ImagePairClassifier.load(colour_clf.save(tmp_path / "colour.safetensors"))
    assert loaded.module_.colour_share == 0.6
    assert_array_equal(loaded.predict_proba(X), colour_clf.predict_proba(X))
    paths = X[:5, 0]
    embedder = ImageEmbedder(classifier=colour_clf).fit()
    vectors = embedder.transform(paths)
    assert vectors.shape == (5, d + 512) and embedder.embedding_dim_ == d + 512
    reloaded = ImageEmbedder.load(embedder.save(tmp_path / "embedder.safetensors"))
    assert reloaded.embedding_dim_ == d + 512
    assert_array_equal(reloaded.transform(paths), vectors)
    metadata = _metadata(tmp_path / "colour.safetensors")
    assert metadata["format_version"] == "4"  # precision="auto"; with fp32, 3 (below)
    assert json.loads(metadata["content"])["network"] == {"test_time_flip": False,
                                                          "colour_share": 0.6}
    # The probabilities follow the blend: without the colours they change.
    plain = pickle.loads(pickle.dumps(colour_clf))
    plain.module_.colour_share = 0.0
    assert not np.allclose(plain.predict_proba(X), colour_clf.predict_proba(X), atol=1e-3)
    # Colour off but module__colour_share among the parameters: still a version-3 file
    # (readers of version 2 would refuse the setting).
    plain.set_params(precision="fp32")
    assert _metadata(plain.save(tmp_path / "plain.safetensors"))["format_version"] == "3"


def _metadata(path):
    from safetensors import safe_open

    with safe_open(path, "pt") as file:
        return file.metadata()


@pytest.mark.slow
def test_classifier_with_colour_exports_to_onnx(colour_clf, image_pairs, tmp_path):
    pytest.importorskip("onnxruntime")
    from sklearn_imgpair.onnx import OnnxImageMatcher

    X, _ = image_pairs
    matcher = OnnxImageMatcher(colour_clf.export_onnx(tmp_path / "colour.onnx"), batch_size=3)
    assert matcher.metadata_["embedding_dim"] == colour_clf.embedding_dim_
    assert_allclose(matcher.predict_proba(X[:7]), colour_clf.predict_proba(X[:7]), atol=1e-4)
    vectors = matcher.transform(X[:4, 0])
    assert vectors.shape == (4, colour_clf.embedding_dim_)


def test_the_embedding_cache_keys_the_colour_setting(colour_clf, image_pairs):
    # Same weights, other settings: the vectors differ, so must the cache entries.
    paths = image_pairs[0][:4, 0]
    with_colour = ImageEmbedder(classifier=colour_clf).fit()
    vectors = with_colour.transform(paths)
    plain = pickle.loads(pickle.dumps(colour_clf))
    plain.module_.colour_share = 0.0
    without = ImageEmbedder(classifier=plain).fit().transform(paths)
    assert without.shape == (4, plain.module_.backbone.num_features)
    assert_allclose(vectors[:, :without.shape[1]], without * 0.4 ** 0.5, atol=1e-6)
    # A setting changed after fit counts too.
    with_colour.module_.test_time_flip = True
    assert not np.allclose(with_colour.transform(paths), vectors, atol=1e-4)


def test_a_module_of_ones_own_without_embedding_dim_uses_its_backbone_features():
    from sklearn_imgpair._nn.siamese import embedding_dim

    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = _Linear()

    assert embedding_dim(Mine()) == 5
    assert embedding_dim(_net(colour_share=0.3)) == 5 + 512
