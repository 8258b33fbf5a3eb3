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


def _net():
    return SiameseNet(_MeanColour(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_head_computes_scale_times_cosine_plus_bias():
    head = CosineMatchHead(init_scale=4.0, init_bias=-1.5)
    torch.testing.assert_close(head.scale, torch.tensor(4.0))
    logits = head(torch.tensor([1.0, 0.0, -0.5]))
    torch.testing.assert_close(logits, torch.tensor([2.5, -1.5, -3.5]))


def test_forward_matches_cosine_computed_by_hand():
    net = _net()
    a, b, c = [255, 0, 0], [255, 255, 0], [0, 0, 255]
    x1 = torch.cat([_flat(a), _flat(a), _flat(b)])
    x2 = torch.cat([_flat(a), _flat(b), _flat(c)])
    # cos(a, a) = 1, cos(a, b) = 1/sqrt(2), cos(b, c) = 0; default head 10 * cos - 5.
    expected = torch.tensor([10 * 1.0 - 5, 10 / math.sqrt(2) - 5, -5.0])
    torch.testing.assert_close(net(x1, x2), expected)


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
