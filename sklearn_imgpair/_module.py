"""SiameseNet: one shared backbone, L2-normalised embeddings and a cosine match head."""

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CosineMatchHead", "SiameseNet"]


class CosineMatchHead(nn.Module):
    """Turn cosine similarities into match logits ``scale * cosine + bias``.

    The scale is stored as its logarithm so that it stays positive: a higher
    cosine always means a more likely match.

    Parameters
    ----------
    init_scale : float, default=10.0
        Initial value of ``scale``.
    init_bias : float, default=-5.0
        Initial value of ``bias``; with the defaults a cosine of 0.5 starts
        at probability 0.5.
    """

    def __init__(self, init_scale=10.0, init_bias=-5.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    @property
    def scale(self):
        """The positive multiplier applied to the cosine."""
        return self.log_scale.exp()

    def forward(self, cosine):
        return self.scale * cosine + self.bias


class SiameseNet(nn.Module):
    """Siamese matcher: both images go through the same backbone.

    Parameters
    ----------
    backbone : torch.nn.Module
        Feature extractor returning ``(n, d)`` features (a timm model created
        with ``num_classes=0``). Its weights are shared by both images.
    mean, std : sequence of float
        Per-channel normalisation the backbone expects.
    augment : torch.nn.Module or None, default=None
        Batch augmentation applied to images in training mode only.

    Notes
    -----
    Images enter as ``uint8`` tensors of shape ``(n, 3, h, w)``; scaling to
    ``[0, 1]``, augmentation and normalisation happen here, on the device.
    :meth:`forward` returns match logits of shape ``(n,)``, whose sigmoid is
    the match probability when trained with binary cross-entropy. Given
    ``views`` as well (the identity batches of graph mining, see
    :class:`ImagePairClassifier`'s ``pair_mining``), it returns the logits and
    the embeddings of the views, all from one backbone call.
    """

    def __init__(self, backbone, *, mean, std, augment=None):
        super().__init__()
        self.backbone = backbone
        self.augment = augment
        self.head = CosineMatchHead()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def embed(self, images):
        """Return L2-normalised embeddings of shape ``(n, d)`` for uint8 images."""
        x = images.to(self.mean.dtype) / 255.0
        if self.augment is not None:
            x = self.augment(x)
        x = (x - self.mean) / self.std
        # float32 out whatever the autocast precision: unit vectors, cosines and
        # losses are computed at full precision.
        return F.normalize(self.backbone(x).float(), dim=-1)

    def similarity(self, embeddings_1, embeddings_2):
        """Return match logits for two aligned batches of embeddings."""
        return self.head((embeddings_1 * embeddings_2).sum(dim=-1))

    def forward(self, x1, x2, views=None):
        # One backbone call for all images: one set of weights, larger batches.
        batches = [x1, x2] if views is None else [x1, x2, views]
        embeddings = self.embed(torch.cat(batches, dim=0))
        embeddings = embeddings.split([len(batch) for batch in batches])
        logits = self.similarity(embeddings[0], embeddings[1])
        return logits if views is None else (logits, embeddings[2])
