"""SiameseNet: one shared backbone, L2-normalised embeddings and a cosine match head.

Besides the network, the steps every estimator takes with it: building it from
a timm backbone, embedding a dataset of images, scoring pairs of embeddings.
"""

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from sklearn_imgpair._images.cells import distinct_images, distinct_paths
from sklearn_imgpair._images.datasets import EmbeddingPairDataset
from sklearn_imgpair._io.device import (
    autocast,
    loader_kwargs,
    prefetch,
    resolve_device,
    to_device,
)
from sklearn_imgpair._nn.backbone import create_backbone, resolve_preprocessing

__all__ = ["CosineMatchHead", "SiameseNet", "embed_dataset", "embed_images",
           "embed_pair_dataset", "pool_embeddings", "score_pairs", "siamese_net_kwargs"]

# Pairs scored per step of score_pairs: 8192 pairs of 768-d float32 vectors
# gather 50 MB, whatever the number of pairs.
SCORE_CHUNK_SIZE = 2**13


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
    ``forward`` returns match logits of shape ``(n,)``, whose sigmoid is
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
        """Return L2-normalised embeddings of shape ``(n, d)`` for uint8 images.

        Parameters
        ----------
        images : torch.Tensor of shape (n, 3, image_size, image_size), dtype=uint8
            RGB images; the module scales and normalises them.

        Returns
        -------
        embeddings : torch.Tensor of shape (n, d), dtype=float32
            Unit-length rows.
        """
        x = images.to(self.mean.dtype) / 255.0
        if self.augment is not None:
            x = self.augment(x)
        x = (x - self.mean) / self.std
        # float32 out whatever the autocast precision: unit vectors, cosines and
        # losses are computed at full precision.
        return F.normalize(self.backbone(x).float(), dim=-1)

    def similarity(self, embeddings_1, embeddings_2):
        """Return match logits for two aligned batches of embeddings.

        Parameters
        ----------
        embeddings_1, embeddings_2 : torch.Tensor of shape (n, d)
            Unit-length embeddings of the first and second images of each pair.

        Returns
        -------
        logits : torch.Tensor of shape (n,)
            ``scale * cosine + bias``.
        """
        return self.head((embeddings_1 * embeddings_2).sum(dim=-1))

    def forward(self, x1, x2, views=None):
        # One backbone call for all images: one set of weights, larger batches.
        batches = [x1, x2] if views is None else [x1, x2, views]
        embeddings = self.embed(torch.cat(batches, dim=0))
        embeddings = embeddings.split([len(batch) for batch in batches])
        logits = self.similarity(embeddings[0], embeddings[1])
        return logits if views is None else (logits, embeddings[2])


def siamese_net_kwargs(model_name, *, pretrained=False, weights_path=None, image_size=None,
                       model_kwargs=None):
    """Build a timm backbone and the :class:`SiameseNet` arguments that go with it.

    Parameters are those of :func:`create_backbone`.

    Returns
    -------
    kwargs : dict
        ``backbone``, ``mean`` and ``std`` for :class:`SiameseNet`.
    image_size : int
        The input side length the network takes.
    """
    backbone = create_backbone(model_name, pretrained=pretrained, weights_path=weights_path,
                               image_size=image_size, model_kwargs=model_kwargs)
    preprocessing = resolve_preprocessing(backbone, image_size)
    kwargs = {"backbone": backbone, "mean": preprocessing["mean"], "std": preprocessing["std"]}
    return kwargs, preprocessing["image_size"]


def embed_images(module, batches, device):
    """Embed every batch of ``(images, errors)`` with ``module.embed`` in eval mode.

    Parameters
    ----------
    module : SiameseNet
        Network whose ``embed`` maps uint8 images to unit vectors.
    batches : iterable of (Tensor, sequence of str)
        Batches as an :class:`ImageDataset` loader yields them: images, and
        per image an error message, empty for an image that was read.
    device : str or torch.device
        Where the network runs.

    Returns
    -------
    embeddings : Tensor of shape (n_images, d)
        NaN rows for the images that could not be read.
    failures : list of str
        The error messages of those images, in order.
    """
    module.eval()
    chunks, failures = [], []
    with torch.no_grad():
        for images, errors in batches:
            vectors = module.embed(to_device(images, device))
            if isinstance(errors, (list, tuple)) and any(errors):
                unreadable = torch.tensor([bool(error) for error in errors],
                                          device=vectors.device)
                vectors = vectors.masked_fill(unreadable[:, None], float("nan"))
                failures.extend(error for error in errors if error)
            chunks.append(vectors)
    return torch.cat(chunks), failures


def embed_dataset(module, dataset, *, batch_size, device, precision="fp32", num_workers=None,
                  iterator=DataLoader, iterator_params=None):
    """Embed an :class:`ImageDataset` batch by batch, decoding in parallel where it pays.

    Parameters
    ----------
    module : SiameseNet
        The network.
    dataset : ImageDataset
        The images, one item per image.
    batch_size : int
        Images per forward pass.
    device : str or torch.device
        Where the network runs (``"auto"`` is resolved).
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Autocast precision of the backbone.
    num_workers : int or None, default=None
        Decode workers (see :func:`loader_kwargs`).
    iterator : type, default=torch.utils.data.DataLoader
        The loader class.
    iterator_params : dict, default=None
        Further loader arguments (e.g. skorch's ``iterator_valid__*``); they
        win over ``batch_size`` and the worker and pinned-memory defaults. A
        batch size of -1 reads everything in one batch, as in skorch.

    Returns
    -------
    embeddings : Tensor of shape (n_images, d)
        NaN rows for the images that could not be read.
    failures : list of str
        The error messages of those images, in order.
    """
    device = resolve_device(device)
    params = {"batch_size": batch_size, **(iterator_params or {})}
    if params["batch_size"] == -1:
        params["batch_size"] = len(dataset)
    params = {**loader_kwargs(device, num_workers, len(dataset), params["batch_size"]), **params}
    batches = iterator(dataset, **params)
    if params["num_workers"]:
        reading = contextlib.nullcontext(batches)
    else:  # decode the next batch while the network runs; closed (thread joined) on error
        reading = contextlib.closing(prefetch(batches))
    with reading as batches, autocast(precision, device):
        return embed_images(module, batches, device)


def pool_embeddings(embeddings, image_index, offsets):
    """One unit vector per cell: the L2-normalised mean of its images' embeddings.

    Parameters
    ----------
    embeddings : Tensor of shape (n_images, d)
        Unit vectors of the distinct images (NaN rows for unreadable ones).
    image_index, offsets : ndarray
        Each cell's images, as :func:`distinct_images` gives them: cell
        ``i`` has the rows ``image_index[offsets[i]:offsets[i + 1]]``.

    Returns
    -------
    pooled : Tensor of shape (n_cells, d)
        A cell of one image gets its image's vector unchanged (bit for bit);
        a cell of several images the normalised mean of theirs, NaN when one
        of them is NaN.
    """
    counts = np.diff(offsets)
    starts = torch.as_tensor(image_index[offsets[:-1]], device=embeddings.device)
    if (counts == 1).all():
        return embeddings[starts]
    owners = torch.as_tensor(np.repeat(np.arange(len(counts)), counts), device=embeddings.device)
    rows = torch.as_tensor(image_index, device=embeddings.device)
    sums = torch.zeros((len(counts), embeddings.shape[1]), dtype=embeddings.dtype,
                       device=embeddings.device).index_add_(0, owners, embeddings[rows])
    single = torch.as_tensor(counts == 1, device=embeddings.device)
    # The mean's direction is the sum's; F.normalize keeps NaN rows NaN.
    return torch.where(single[:, None], embeddings[starts], F.normalize(sums, dim=-1))


def score_pairs(module, embeddings, index, chunk_size=None):
    """Match logits of pairs of rows of ``embeddings``, a chunk of pairs at a time.

    Parameters
    ----------
    module : SiameseNet
        Its ``similarity`` turns two aligned batches of embeddings into logits.
    embeddings : Tensor of shape (n_images, d)
    index : ndarray of shape (n_pairs, 2)
        Rows of ``embeddings`` to compare.
    chunk_size : int, default=None
        Pairs per step (None: ``SCORE_CHUNK_SIZE``, 8192); memory beyond
        ``embeddings`` is proportional to ``chunk_size * d``.

    Returns
    -------
    logits : ndarray of shape (n_pairs,), dtype=float32
    """
    chunk_size = SCORE_CHUNK_SIZE if chunk_size is None else chunk_size
    logits = np.empty(len(index), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(index), chunk_size):
            rows = torch.as_tensor(index[start:start + chunk_size], device=embeddings.device)
            chunk = module.similarity(embeddings[rows[:, 0]], embeddings[rows[:, 1]])
            logits[start:start + len(rows)] = chunk.float().cpu().numpy()
    return logits


def embed_pair_dataset(module, dataset, *, batch_size, device, precision="fp32"):
    """Embed each distinct image of a :class:`PairDataset` once, for a frozen backbone.

    The images come from the dataset's cache, filled when they were read
    before training; the embeddings replace them. A cell of several images
    gets the normalised mean of their embeddings (:func:`pool_embeddings`),
    as at prediction time: without augmentation there is nothing to gain
    from drawing one of them.

    Returns
    -------
    dataset : EmbeddingPairDataset
        The same pairs and targets, as rows of an embedding matrix.
    """
    cells, _, inverse = distinct_paths(dataset.pairs)
    images, image_index, offsets, _ = distinct_images(cells)
    batches = ((torch.stack([dataset.cache.get(image, dataset.image_size)
                             for image in images[start:start + batch_size]]), None)
               for start in range(0, len(images), batch_size))
    device = resolve_device(device)
    with autocast(precision, device):
        embeddings, _ = embed_images(module, batches, device)
    embeddings = pool_embeddings(embeddings, image_index, offsets)
    return EmbeddingPairDataset(dataset.pairs, dataset.y, embeddings=embeddings.cpu(),
                                index=inverse.reshape(-1, 2))
