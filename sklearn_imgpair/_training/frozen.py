"""Frozen-backbone training: each image embedded once, the match head trained on the vectors.

With ``freeze_backbone=True`` the backbone's weights get ``requires_grad=False``
and stay out of the optimizer (and its weight decay); the labelled training
pairs are turned into pairs of embeddings, each distinct image embedded once
(:func:`embed_pair_dataset`), and batches of embeddings (``"e1"``, ``"e2"``)
go through the match head alone. Prediction is unchanged.

skorch's own :class:`skorch.callbacks.Freezer` does not fit: it freezes when
an epoch begins, after the optimizer was built with every parameter and after
the training pairs were read as images, whereas here the backbone is left out
of the optimizer and the pairs are embedded once before the first epoch.
"""

from collections.abc import Mapping

from skorch.utils import to_tensor

from sklearn_imgpair._images.datasets import PairDataset
from sklearn_imgpair._nn.siamese import embed_pair_dataset

__all__ = [
    "embed_training_pairs",
    "freeze_backbone_parameters",
    "is_embedding_batch",
    "match_embedding_batch",
    "trainable_parameters",
]


def freeze_backbone_parameters(module):
    """Set ``requires_grad=False`` on the backbone's parameters of ``module``.

    By parameter name, so that a module wrapped for distributed training
    (``"module.backbone...."``) is frozen alike.
    """
    for name, param in module.named_parameters():
        if "backbone" in name.split("."):
            param.requires_grad_(False)


def trainable_parameters(named_parameters):
    """The ``(name, parameter)`` pairs that train (a frozen backbone's do not)."""
    return [(name, param) for name, param in named_parameters if param.requires_grad]


def embed_training_pairs(module, dataset, *, batch_size, precision):
    """Labelled pairs of images as pairs of embeddings; other datasets as they are.

    Each distinct image is embedded once, where the network is (the
    accelerator's device, too).
    """
    if not isinstance(dataset, PairDataset) or dataset.y is None:
        return dataset
    device = next(module.parameters()).device
    return embed_pair_dataset(module, dataset, batch_size=batch_size, device=device,
                              precision=precision)


def is_embedding_batch(x):
    """Whether ``x`` is a batch of pairs of embeddings (``"e1"``, ``"e2"``)."""
    return isinstance(x, Mapping) and "e1" in x


def match_embedding_batch(module, x, device):
    """Match logits of a batch of pairs of embeddings: the match head alone."""
    x = to_tensor(dict(x), device=device)
    return module.similarity(x["e1"], x["e2"])
