"""SiameseNet: one shared backbone, L2-normalised embeddings and a cosine match head.

Besides the network, the steps every estimator takes with it: building it from
a timm backbone, embedding images with it (the torch side of
:func:`~sklearn_imgpair._images.embedding.embed_cells`: a DataLoader, a
prefetch thread, autocast, the device) and scoring pairs of embeddings with its
head.
"""

import contextlib
import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from sklearn_imgpair._images.batch_size import inference_batch_size
from sklearn_imgpair._images.datasets import ImageDataset
from sklearn_imgpair._images.progress import advancing, progress_bar
from sklearn_imgpair._matching import score_pairs
from sklearn_imgpair._nn.backbone import create_backbone, resolve_preprocessing
from sklearn_imgpair._nn.colour import ColourHistogram
from sklearn_imgpair._nn.device import (
    autocast,
    device_type,
    loader_kwargs,
    prefetch,
    resolve_device,
    to_device,
)

__all__ = ["CosineMatchHead", "SiameseNet", "embed_dataset", "embed_images", "embedding_dim",
           "image_embedder", "pair_scorer", "siamese_net_kwargs"]


class CosineMatchHead(nn.Module):
    """Turn cosine similarities into match logits ``scale * link(cosine) + bias``.

    The scale is stored as its logarithm so that it stays positive: a higher
    cosine always means a more likely match.

    Parameters
    ----------
    init_scale : float, default=10.0
        Initial value of ``scale``.
    init_bias : float, default=None
        Initial value of ``bias``; None starts a cosine of 0.5 at
        probability 0.5.
    link : {"linear", "atanh"}, default="linear"
        ``"linear"``: the logit is linear in the cosine, so the probability
        of two identical images (cosine 1) is capped at
        ``sigmoid(scale + bias)``; training uses this link (its gradient is
        bounded). ``"atanh"``: linear in ``atanh(cosine)`` (Fisher's z of the
        cosine, which runs from minus to plus infinity), so identical images
        get probability 1 and opposite ones 0 however flat the slope is;
        cosines are clipped to ``1 - 1e-6`` in magnitude.
        :class:`HeadCalibration` sets this link when it calibrates.
    """

    LINKS = ("atanh", "linear")
    _LIMIT = 1.0 - 1e-6

    def __init__(self, init_scale=10.0, init_bias=None, link="linear"):
        super().__init__()
        # The link is state (0: linear, 1: atanh), so that it travels with the
        # weights: state dicts, checkpoints, the early-stopping snapshot.
        self.register_buffer("link_atanh", torch.tensor(0.0))
        self.link = link
        if init_bias is None:
            init_bias = -init_scale * float(self.transform(torch.tensor(0.5)))
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    @property
    def link(self):
        """``"atanh"`` or ``"linear"``; settable."""
        return "atanh" if self.link_atanh.item() else "linear"

    @link.setter
    def link(self, value):
        if value not in self.LINKS:
            raise ValueError(f"link must be one of {self.LINKS}; got {value!r}.")
        self.link_atanh.fill_(float(value == "atanh"))

    @property
    def scale(self):
        """The positive multiplier applied to the transformed cosine."""
        return self.log_scale.exp()

    def transform(self, cosine, link=None):
        """``link(cosine)``: what the logit is linear in (the head's link by default)."""
        link = link or self.link
        if link not in self.LINKS:
            raise ValueError(f"link must be one of {self.LINKS}; got {link!r}.")
        if link == "linear":
            return cosine
        return torch.atanh(cosine.clamp(-self._LIMIT, self._LIMIT))

    def linearize(self):
        """Turn an atanh head into its tangent at probability 0.5, linear in the cosine.

        Training goes through the linear link (the atanh link's gradient
        grows without bound near cosine 1); a calibrated head that trains
        again starts from the linear head closest to it where it decides.
        A linear head is left as it is.
        """
        if self.link == "linear":
            return
        with torch.no_grad():
            a, b = self.scale.item(), self.bias.item()
            c0 = math.tanh(-b / a)  # where a * atanh(c) + b = 0
            slope = a / (1.0 - c0 * c0)
            self.log_scale.fill_(math.log(slope))
            self.bias.fill_(-slope * c0)
        self.link = "linear"

    def set_calibration(self, scale, bias, *, link="atanh"):
        """Set the head to ``scale * link(cosine) + bias``, as a calibration found it.

        Parameters
        ----------
        scale : float
            The new positive ``scale``.
        bias : float
            The new ``bias``.
        link : {"atanh", "linear"}, default="atanh"
            The new link.

        Raises
        ------
        ValueError
            If ``scale`` is not positive or ``link`` is not a link.
        """
        if not scale > 0:
            raise ValueError(f"scale must be positive; got {scale!r}.")
        self.link = link
        with torch.no_grad():
            self.log_scale.fill_(math.log(scale))
            self.bias.fill_(float(bias))

    def inverse(self, logit):
        """The cosine whose logit is ``logit``.

        Parameters
        ----------
        logit : float or Tensor
            Infinities are allowed.

        Returns
        -------
        cosine : float or Tensor
            For the ``"linear"`` link it may lie outside [-1, 1].
        """
        value = (logit - self.bias.item()) / self.scale.item()
        if self.link == "linear":
            return value
        return torch.tanh(value) if isinstance(value, torch.Tensor) else math.tanh(value)

    def forward(self, cosine):
        # No branch on the link (a buffer): the graph is the same for both,
        # which torch.export (ONNX) needs; lerp with weight 0 is exactly ``cosine``.
        fisher_z = torch.atanh(cosine.clamp(-self._LIMIT, self._LIMIT))
        return self.scale * torch.lerp(cosine, fisher_z, self.link_atanh) + self.bias

    def extra_repr(self):
        return f"link={self.link!r}"


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
    test_time_flip : bool, default=False
        In evaluation mode, embed each image as the normalised sum of the
        backbone's features of the image and of its mirror image (test-time
        augmentation; twice the work per image). Training is unchanged.
    head_link : {"linear", "atanh"}, default="linear"
        The link of the match head (``CosineMatchHead``) in training.
    colour_share : float in [0, 1), default=0.0
        Weight of colour in the similarity. Above 0, each embedding is the
        backbone's unit vector scaled by ``sqrt(1 - colour_share)`` followed
        by the image's 8x8x8 colour histogram (:class:`ColourHistogram`, a unit
        vector) scaled by ``sqrt(colour_share)``, so the cosine of two images
        is ``(1 - colour_share) * backbone cosine + colour_share * colour
        cosine``, in training as in prediction: the backbone learns what the
        colours do not tell. Embeddings get 512 more dimensions. 0 (no
        colour) leaves the embeddings the backbone's. An item of several
        images gets the normalised mean of their embeddings, whose colour
        part weighs a little more where the backbone's vectors of its images
        disagree more than their colours do. The identity loss of graph
        mining trains the backbone's part alone (``forward`` returns the
        views' backbone embeddings), so
        that the backbone learns to tell identities apart at full strength
        whatever the share: on the blend, the loss would see the backbone's
        cosines scaled by ``1 - colour_share``.

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

    # Networks pickled before these options existed.
    test_time_flip = False
    _colour_share = 0.0

    def __init__(self, backbone, *, mean, std, augment=None, test_time_flip=False,
                 head_link="linear", colour_share=0.0):
        super().__init__()
        self.backbone = backbone
        self.augment = augment
        self.test_time_flip = test_time_flip
        self.colour_share = colour_share
        self.colour = ColourHistogram()
        self.head = CosineMatchHead(link=head_link)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def colour_share(self):
        """Weight of the colour cosine in the similarity (0: none); settable."""
        return self._colour_share

    @colour_share.setter
    def colour_share(self, value):
        if not isinstance(value, Real) or isinstance(value, bool):
            raise TypeError(f"colour_share must be a number in [0, 1); got {value!r}.")
        if not 0 <= value < 1:
            raise ValueError(f"colour_share must be a number in [0, 1); got {value!r}.")
        self._colour_share = float(value)

    @property
    def embedding_dim(self):
        """Length of the embeddings: the backbone's features, and the colours if any."""
        colours = self.colour.dim if self.colour_share else 0
        return int(self.backbone.num_features) + colours

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
        embeddings = self._embed_normalised((x - self.mean) / self.std)
        if not self.colour_share:
            return embeddings
        # Both parts are unit vectors: the result is one, and its cosines blend theirs.
        return torch.cat([embeddings * math.sqrt(1.0 - self.colour_share),
                          self.colour(x) * math.sqrt(self.colour_share)], dim=-1)

    def _embed_normalised(self, x):
        """Unit-length backbone features of normalised images (both flips in test-time flips)."""
        if self.test_time_flip and not self.training:
            # One backbone call for both; the features of a mirror pair are summed
            # (sliced, not chunked: chunk would fix the batch size in torch.export).
            n = x.shape[0]
            features = self.backbone(torch.cat([x, x.flip(-1)])).float()
            return F.normalize(features[:n] + features[n:], dim=-1)
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
            ``scale * link(cosine) + bias``, ``link`` the identity in
            training and ``atanh`` once :class:`HeadCalibration` has
            calibrated the head.
        """
        return self.head((embeddings_1 * embeddings_2).sum(dim=-1))

    def forward(self, x1, x2, views=None):
        # One backbone call for all images: one set of weights, larger batches.
        batches = [x1, x2] if views is None else [x1, x2, views]
        embeddings = self.embed(torch.cat(batches, dim=0))
        embeddings = embeddings.split([len(batch) for batch in batches])
        logits = self.similarity(embeddings[0], embeddings[1])
        return logits if views is None else (logits, self.backbone_part(embeddings[2]))

    def backbone_part(self, embeddings):
        """The backbone's unit vectors within embeddings (all of them without colour).

        Parameters
        ----------
        embeddings : torch.Tensor of shape (n, embedding_dim)
            Embeddings as ``embed`` returns them.

        Returns
        -------
        features : torch.Tensor of shape (n, backbone.num_features)
        """
        if not self.colour_share:
            return embeddings
        return F.normalize(embeddings[:, :self.backbone.num_features], dim=-1)


def embedding_dim(module):
    """Length of the embeddings of ``module``, a :class:`SiameseNet` or a module of the user's.

    A module that does not say (no ``embedding_dim``) embeds with its backbone alone.
    """
    dim = getattr(module, "embedding_dim", None)
    return int(module.backbone.num_features if dim is None else dim)


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
    batches : iterable of (Tensor, sequence of str or None)
        Batches as an :class:`ImageDataset` loader yields them: images, and
        per image an error message, empty for an image that was read (None:
        every image was read).
    device : str or torch.device
        Where the network runs.

    Returns
    -------
    embeddings : Tensor of shape (n_images, d)
        On ``device``; the rows of unreadable images embed a placeholder.
    errors : list of str
        Per image, ``""`` or the message of an image that could not be read.
    """
    module.eval()
    chunks, errors = [], []
    with torch.no_grad():
        for images, batch_errors in batches:
            chunks.append(module.embed(to_device(images, device)))
            errors.extend([""] * len(images) if batch_errors is None else batch_errors)
    return torch.cat(chunks), errors


def embed_dataset(module, dataset, *, batch_size, device, precision="fp32", num_workers=None,
                  iterator=DataLoader, iterator_params=None, verbose=0):
    """Embed an :class:`ImageDataset` batch by batch, decoding in parallel where it pays.

    Parameters
    ----------
    module : SiameseNet
        The network.
    dataset : ImageDataset
        The images, one item per image.
    batch_size : int or "auto"
        Images per forward pass; ``"auto"`` chooses it for the device and the
        dataset's image size (:func:`inference_batch_size`).
    device : str or torch.device
        Where the network runs (``"auto"`` is resolved).
    precision : {"auto", "fp32", "bf16", "fp16"}, default="fp32"
        Autocast precision of the backbone (``"auto"``: bfloat16 where the
        device computes it natively, see :func:`resolve_precision`).
    num_workers : int or None, default=None
        Decode workers (see :func:`loader_kwargs`).
    iterator : type, default=torch.utils.data.DataLoader
        The loader class.
    iterator_params : dict, default=None
        Further loader arguments (e.g. skorch's ``iterator_valid__*``); they
        win over ``batch_size`` and the worker and pinned-memory defaults. A
        batch size of -1 reads everything in one batch, as in skorch.
    verbose : int, default=0
        1 or more shows a progress bar of the images embedded, on stderr.

    Returns
    -------
    embeddings : Tensor of shape (n_images, d)
        On the device; the rows of unreadable images embed a placeholder.
    errors : list of str
        Per image, ``""`` or the message of an image that could not be read.
    """
    device = resolve_device(device)
    params = {"batch_size": batch_size, **(iterator_params or {})}
    if isinstance(params["batch_size"], str) and params["batch_size"] == "auto":
        params["batch_size"] = inference_batch_size(device_type(device), dataset.image_size)
    elif params["batch_size"] == -1:
        params["batch_size"] = len(dataset)
    params = {**loader_kwargs(device, num_workers, len(dataset), params["batch_size"]), **params}
    batches = iterator(dataset, **params)
    if params["num_workers"]:
        reading = contextlib.nullcontext(batches)
    else:  # decode the next batch while the network runs; closed (thread joined) on error
        reading = contextlib.closing(prefetch(batches))
    with (reading as batches, autocast(precision, device),
          progress_bar(len(dataset), "Embedding", verbose) as bar):
        return embed_images(module, advancing(batches, bar), device)


def image_embedder(module, *, image_size, on_error, batch_size, device, precision="fp32",
                   num_workers=None, iterator=DataLoader, iterator_params=None, verbose=0):
    """The ``embed_images`` callable of :func:`embed_cells` for a torch network.

    Images are decoded by an :class:`ImageDataset` (under ``on_error``) and
    embedded by :func:`embed_dataset`, whose other parameters these are
    (``verbose``: a progress bar over the images not found in the cache).

    Returns
    -------
    embed_images : callable
        ``embed_images(images, names)`` returns a float32 array of shape
        ``(len(images), d)`` and the error message of each image.
    """

    def embed(images, names):
        dataset = ImageDataset(images, image_size, names=names, on_error=on_error)
        embeddings, errors = embed_dataset(
            module, dataset, batch_size=batch_size, device=device, precision=precision,
            num_workers=num_workers, iterator=iterator, iterator_params=iterator_params,
            verbose=verbose)
        return embeddings.float().cpu().numpy(), errors

    return embed


def pair_scorer(module, device):
    """The ``score`` callable of :func:`~sklearn_imgpair._matching.match_logits` for a network.

    Parameters
    ----------
    module : SiameseNet
        Its ``similarity`` turns two aligned batches of embeddings into logits.
    device : str or torch.device
        Where the network is; the embeddings are compared there.

    Returns
    -------
    score : callable
        ``score(embeddings, index)`` returns the float32 match logits of the
        pairs of rows ``index`` of ``embeddings`` (a float32 array), computed
        by :func:`~sklearn_imgpair._matching.score_pairs`, a chunk of pairs at
        a time.
    """

    def similarity(embeddings_1, embeddings_2):
        return module.similarity(embeddings_1, embeddings_2).float().cpu().numpy()

    def score(embeddings, index):
        with torch.no_grad():
            return score_pairs(torch.from_numpy(embeddings).to(device), index, similarity)

    return score

