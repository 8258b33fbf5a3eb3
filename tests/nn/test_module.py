import math

import pytest
import torch
from torch import nn

from sklearn_imgpair._nn.siamese import CosineMatchHead, SiameseNet


class _MeanColour(nn.Module):
    """A stand-in backbone: the mean of each channel, so embeddings are known."""

    num_features = 3

    def forward(self, x):
        return x.mean(dim=(2, 3))


def _flat(colour, size=4):
    return torch.tensor(colour, dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, size, size)


def _net(**kwargs):
    return SiameseNet(_MeanColour(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kwargs)


def test_linear_head_computes_scale_times_cosine_plus_bias():
    head = CosineMatchHead(init_scale=4.0, init_bias=-1.5, link="linear")
    torch.testing.assert_close(head.scale, torch.tensor(4.0))
    logits = head(torch.tensor([1.0, 0.0, -0.5]))
    torch.testing.assert_close(logits, torch.tensor([2.5, -1.5, -3.5]))


def test_atanh_head_computes_scale_times_fisher_z_plus_bias():
    assert CosineMatchHead().link == "linear"  # training's link
    head = CosineMatchHead(init_scale=4.0, init_bias=-1.5, link="atanh")
    cosine = torch.tensor([0.0, -0.5, 0.5, 0.9])
    expected = 4.0 * 0.5 * torch.log((1 + cosine) / (1 - cosine)) - 1.5
    torch.testing.assert_close(head(cosine), expected)
    # Identical images (cosine 1, or a hair above from rounding) get probability ~1,
    # opposite ones ~0, whatever the scale: the logit is finite but large.
    extremes = head(torch.tensor([1.0, 1.0 + 1e-7, -1.0]))
    assert torch.isfinite(extremes).all()
    assert torch.sigmoid(extremes[:2]).min() > 0.999999 and torch.sigmoid(extremes[2]) < 1e-6
    flat = CosineMatchHead(init_scale=1.0, init_bias=-2.0, link="atanh")
    assert torch.sigmoid(flat(torch.tensor(1.0))) > 0.99  # a linear head would give 0.27


@pytest.mark.parametrize("link", ["atanh", "linear"])
def test_head_inverse_gives_the_cosine_of_a_logit(link):
    head = CosineMatchHead(init_scale=3.0, init_bias=-1.0, link=link)
    cosine = torch.tensor([-0.8, 0.0, 0.3, 0.95])
    for value, logit in zip(cosine.tolist(), head(cosine).tolist()):
        assert head.inverse(logit) == pytest.approx(value, abs=1e-5)
    assert head.inverse(-math.inf) == (-math.inf if link == "linear" else -1.0)


def test_linearize_gives_the_tangent_at_probability_half():
    head = CosineMatchHead(init_scale=3.0, init_bias=-1.0, link="atanh")
    c0 = math.tanh(1.0 / 3.0)  # where 3 * atanh(c) - 1 = 0
    before = head(torch.tensor([c0 - 1e-3, c0, c0 + 1e-3]))
    head.linearize()
    assert head.link == "linear"
    after = head(torch.tensor([c0 - 1e-3, c0, c0 + 1e-3]))
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)  # same value and slope at c0
    assert head(torch.tensor(c0)).item() == pytest.approx(0.0, abs=1e-6)
    scale = head.scale.item()
    head.linearize()  # a linear head is left alone
    assert head.scale.item() == scale
    with pytest.raises(ValueError, match="link must be one of"):
        head.transform(torch.tensor(0.5), "cubic")


def test_head_defaults_put_probability_half_at_cosine_half():
    for link in ["atanh", "linear"]:
        head = CosineMatchHead(link=link)
        assert head(torch.tensor(0.5)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="link must be one of"):
        CosineMatchHead(link="cubic")


def test_forward_matches_cosine_computed_by_hand():
    net = _net()
    a, b, c = [255, 0, 0], [255, 255, 0], [0, 0, 255]
    x1 = torch.cat([_flat(a), _flat(a), _flat(b)])
    x2 = torch.cat([_flat(a), _flat(b), _flat(c)])
    # cos(a, a) = 1, cos(a, b) = 1/sqrt(2), cos(b, c) = 0; default head 10 * cos - 5.
    expected = torch.tensor([10 * 1.0 - 5, 10 / math.sqrt(2) - 5, -5.0])
    torch.testing.assert_close(net(x1, x2), expected)
    # The atanh link: 10 * atanh(cos) + bias, with P = 0.5 at cos = 0.5.
    net = _net(head_link="atanh")
    cosine = torch.tensor([1.0 - 1e-6, 1 / math.sqrt(2), 0.0])
    expected = 10 * (torch.atanh(cosine) - math.atanh(0.5))
    torch.testing.assert_close(net(x1, x2), expected, rtol=1e-4, atol=1e-4)


def test_test_time_flip_averages_an_image_and_its_mirror_in_eval_only():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    net = SiameseNet(backbone, mean=(0,) * 3, std=(1,) * 3, test_time_flip=True)
    images = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    x = images.float() / 255.0
    expected = torch.nn.functional.normalize(backbone(x) + backbone(x.flip(-1)), dim=-1)
    net.eval()
    torch.testing.assert_close(net.embed(images), expected)
    # A mirror image gets the same embedding; in training the flip is not applied.
    torch.testing.assert_close(net.embed(images.flip(-1)), expected)
    net.train()
    torch.testing.assert_close(net.embed(images),
                               torch.nn.functional.normalize(backbone(x), dim=-1))


def test_embeddings_are_unit_length_and_normalised_with_mean_std():
    net = SiameseNet(_MeanColour(), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    embedding = net.embed(_flat([255, 0, 128]))
    expected = torch.tensor([[1.0, -1.0, 128 / 255 * 2 - 1]])
    torch.testing.assert_close(embedding, expected / expected.norm())
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(1))


def test_siamese_net_shares_one_backbone_and_is_symmetric():
    net = SiameseNet(nn.Sequential(nn.Flatten(), nn.Linear(48, 8)), mean=(0,) * 3, std=(1,) * 3)
    n_total = sum(p.numel() for p in net.parameters())
    assert n_total == 48 * 8 + 8 + 2  # one Linear backbone plus the head's scale and bias
    x1 = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    x2 = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    torch.testing.assert_close(net(x1, x2), net(x2, x1))
    assert net(x1, x2).shape == (5,)


def test_augment_runs_in_training_mode_only():
    calls = []

    class Recorder(nn.Module):
        def forward(self, x):
            calls.append(self.training)
            return x

    net = SiameseNet(_MeanColour(), mean=(0,) * 3, std=(1,) * 3, augment=Recorder())
    images = _flat([10, 20, 30])
    net.train()
    net.embed(images)
    net.eval()
    net.embed(images)
    assert calls == [True, False]


@pytest.mark.parametrize("scale", [0.5, 20.0])
def test_head_scale_stays_positive(scale):
    head = CosineMatchHead(init_scale=scale)
    assert head.scale.item() > 0
    assert head(torch.tensor([0.9])) > head(torch.tensor([0.1]))


def test_set_calibration_sets_scale_bias_and_link():
    head = CosineMatchHead(init_scale=4.0, init_bias=-1.5, link="linear")
    head.set_calibration(2.0, 0.5, link="atanh")
    assert head.link == "atanh"
    cosine = torch.tensor([0.0, 0.5, -0.25])
    torch.testing.assert_close(head(cosine), 2.0 * torch.atanh(cosine) + 0.5)
    head.set_calibration(3.0, -1.0, link="linear")
    torch.testing.assert_close(head(cosine), 3.0 * cosine - 1.0)


@pytest.mark.parametrize("scale, link, match", [(0.0, "atanh", "scale must be positive"),
                                                (1.0, "logit", "link must be one of")])
def test_set_calibration_rejects_a_non_positive_scale_and_unknown_links(scale, link, match):
    head = CosineMatchHead()
    with pytest.raises(ValueError, match=match):
        head.set_calibration(scale, 0.0, link=link)
    assert head.link == "linear" and head.scale.item() == pytest.approx(10.0)
