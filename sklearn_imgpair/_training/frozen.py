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

import torch
from skorch.utils import to_tensor

from sklearn_imgpair._images.datasets import EmbeddingPairDataset, PairDataset
from sklearn_imgpair._images.embedding import embed_cells
from sklearn_imgpair._nn.device import autocast, resolve_device
from sklearn_imgpair._nn.siamese import embed_images

__all__ = [
    "embed_pair_dataset",
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


def embed_pair_dataset(module, dataset, *, batch_size, device, precision="fp32"):
    """Embed each distinct image of a :class:`PairDataset` once, for a frozen backbone.

    The images come from the dataset's cache, filled when they were read
    before training; the embeddings replace them. A cell of several images
    gets the normalised mean of their embeddings (:func:`embed_cells`), as
    at prediction time: without augmentation there is nothing to gain from
    drawing one of them. They are training data, so ``precision="auto"``
    embeds them in float32, as training does (:func:`resolve_precision`).

    Returns
    -------
    dataset : EmbeddingPairDataset
        The same pairs and targets, as rows of an embedding matrix.
    """
    device = resolve_device(device)

    def embed_cached(images, names):
        batches = ((torch.stack([dataset.cache.get(image, dataset.image_size)
                                 for image in images[start:start + batch_size]]), None)
                   for start in range(0, len(images), batch_size))
        with autocast(precision, device, training=True):
            embeddings, errors = embed_images(module, batches, device)
        return embeddings.float().cpu().numpy(), errors

    embeddings, inverse, _ = embed_cells(dataset.pairs, embed_cached)
    return EmbeddingPairDataset(dataset.pairs, dataset.y, embeddings=torch.from_numpy(embeddings),
                                index=inverse.reshape(-1, 2))


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
