"""Torch datasets of images, image pairs and embedded pairs, and the reading of training pairs."""

import numpy as np
import torch

from sklearn_imgpair._images.decode import DecodedImageCache, decode_pair_images, load_image
from sklearn_imgpair._images.unreadable import IMAGE_ERRORS, read_or_report, warn_unreadable
from sklearn_imgpair._images.validation import check_files_exist

__all__ = ["EmbeddingPairDataset", "ImageDataset", "PairDataset", "pair_dataset",
           "pick_image", "training_pairs", "unwrap_subsets"]


def pick_image(cell):
    """One image of a cell: the image itself, or one of a multi-image cell drawn at random.

    The draw comes from torch's global generator, which the estimators seed
    with their ``random_state`` (and DataLoader workers seed per worker).

    Returns
    -------
    image : str or InMemoryImage
    part : int or None
        The position of the image drawn in a multi-image cell, else None.
    """
    if not isinstance(cell, tuple):
        return cell, None
    part = int(torch.randint(len(cell), ()))
    return cell[part], part


class ImageDataset(torch.utils.data.Dataset):
    """Images read from a list of single images, one item per image.

    Parameters
    ----------
    paths : sequence of str or InMemoryImage
        Single images (paths, or in-memory images of :func:`check_pairs`),
        in output order.
    image_size : int
        Side length every image is resized to.
    names : sequence of str, default=None
        How errors refer to each item, e.g. ``"X[3, 1]"``; by default
        ``"item <index>"``.
    on_error : {"raise", "warn"}, default="raise"
        What an image that cannot be read does: ``"raise"`` raises an error
        that names the item; ``"warn"`` yields a black placeholder and the
        error message instead, for the consumer to discard (the dataset
        itself does not warn).

    Notes
    -----
    Items are ``(image, error)`` tuples, ``error`` being ``""`` for an image
    that was read, so that skorch's iterators, which expect ``(X, y)``
    batches, can iterate over the dataset.
    """

    def __init__(self, paths, image_size, names=None, on_error="raise"):
        self.paths = paths
        self.image_size = image_size
        self.names = names
        self.on_error = on_error

    def __len__(self):
        return len(self.paths)

    def _read(self, image):
        return load_image(image, self.image_size)

    def __getitem__(self, index):
        name = f"item {index}" if self.names is None else self.names[index]
        image, error = read_or_report(self._read, self.paths[index], name, self.on_error)
        if image is None:
            image = torch.zeros((3, self.image_size, self.image_size), dtype=torch.uint8)
        return image, error


class PairDataset(torch.utils.data.Dataset):
    """Pairs of images read from a two-column array of cells.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        Normalised cells as returned by :func:`check_pairs`.
    y : ndarray of shape (n_pairs,) or None
        Float match targets, or None at prediction time.
    image_size : int
        Side length every image is resized to.
    cache : DecodedImageCache, default=None
        Where decoded images are kept between reads; None decodes on every
        read.

    Notes
    -----
    Items are ``({"x1": image, "x2": image}, target)``; the dictionary keys
    are the argument names of :meth:`SiameseNet.forward`. An image that cannot
    be read raises an error that names its row and column in ``pairs``.

    A cell of several images gives one of them, drawn at random each time
    the pair is read (:func:`pick_image`): in training, another view of the
    item in each epoch, an augmentation.
    """

    def __init__(self, pairs, y=None, *, image_size, cache=None):
        self.pairs = pairs
        self.y = y
        self.image_size = image_size
        self.cache = cache

    def __len__(self):
        return len(self.pairs)

    def _read(self, image):
        if self.cache is None:
            return load_image(image, self.image_size)
        return self.cache.get(image, self.image_size)

    def read_cell(self, cell):
        """Decode one image of ``cell`` (drawn at random from a multi-image cell)."""
        return self._read(pick_image(cell)[0])

    def _load(self, row, column):
        cell = self.pairs[row, column]
        image, part = pick_image(cell)
        try:
            return self._read(image)
        except IMAGE_ERRORS as exc:
            name = f"X[{row}, {column}]"
            if part is not None:
                name += f" (image {part + 1} of {len(cell)})"
            raise type(exc)(f"{name}: {exc}") from exc

    def __getitem__(self, index):
        images = {"x1": self._load(index, 0), "x2": self._load(index, 1)}
        target = 0.0 if self.y is None else self.y[index]
        return images, torch.tensor(target, dtype=torch.float32)


class EmbeddingPairDataset(torch.utils.data.Dataset):
    """Pairs of precomputed embeddings, for training the match head alone.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        The cells behind the pairs (kept for reference, e.g. splits).
    y : ndarray of shape (n_pairs,) or None
        Float match targets.
    embeddings : Tensor of shape (n_images, d)
        One unit vector per distinct image.
    index : ndarray of shape (n_pairs, 2)
        Rows of ``embeddings`` of each pair's two images.

    Notes
    -----
    Items are ``({"e1": vector, "e2": vector}, target)``; the classifier
    scores such batches with the match head alone, without the backbone.
    """

    def __init__(self, pairs, y, *, embeddings, index):
        self.pairs = pairs
        self.y = y
        self.embeddings = embeddings
        self.index = torch.as_tensor(index, dtype=torch.int64)

    def __len__(self):
        return len(self.index)

    def __getitem__(self, index):
        first, second = self.index[index]
        target = 0.0 if self.y is None else self.y[index]
        return ({"e1": self.embeddings[first], "e2": self.embeddings[second]},
                torch.tensor(target, dtype=torch.float32))


def unwrap_subsets(dataset):
    """Return the dataset under nested Subsets and the indices they select (None: all)."""
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        indices = (np.asarray(dataset.indices) if indices is None
                   else np.asarray(dataset.indices)[indices])
        dataset = dataset.dataset
    return dataset, indices


def training_pairs(dataset):
    """Return the pairs and targets behind a :class:`PairDataset` or a Subset of one.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        The training data as skorch passes it to ``get_iterator``: a
        ``PairDataset``, or (after a validation split) nested Subsets of one.

    Returns
    -------
    found : tuple of (ndarray of shape (n, 2), ndarray of shape (n,)) or None
        The pairs and their targets, or None for datasets of another kind or
        without targets.
    """
    dataset, indices = unwrap_subsets(dataset)
    pairs, targets = getattr(dataset, "pairs", None), getattr(dataset, "y", None)
    if pairs is None or targets is None:
        return None
    if indices is not None:
        pairs, targets = pairs[indices], np.asarray(targets)[indices]
    return pairs, np.asarray(targets)


def pair_dataset(pairs, targets, *, image_size, cache_size, on_error="raise",
                 require_both_classes=True, read=True):
    """Turn validated pairs into a :class:`PairDataset`, every image read once beforehand.

    Each distinct image (every image of a multi-image cell) is decoded
    once, on several threads, into a :class:`DecodedImageCache` of
    ``cache_size`` MB that the dataset keeps, so the first epoch decodes
    nothing again and a bad image is found before any training.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        Validated cells (see :func:`check_pairs`).
    targets : ndarray of shape (n_pairs,), dtype=float32, or None
        1.0 for a match, 0.0 otherwise.
    image_size : int or None
        Side length the images are resized to; None when it is not known
        yet (nothing is read then).
    cache_size : float
        Memory in MB for decoded images.
    on_error : {"raise", "warn"}, default="raise"
        ``"raise"``: the first unreadable image, in row order, raises an
        error naming its cell. ``"warn"``: the pairs with unreadable images
        are left out, with one :class:`UnreadableImageWarning`.
    require_both_classes : bool, default=True
        Refuse to train when leaving pairs out removes a class.
    read : bool, default=True
        False wraps the pairs without reading any image (their files are
        still checked with ``on_error="raise"``).

    Returns
    -------
    dataset : PairDataset
        The readable pairs, with the cache that holds their images.

    Raises
    ------
    FileNotFoundError, ValueError
        For an unreadable image with ``on_error="raise"``, or when too few
        pairs are left.
    """
    if on_error == "raise":  # every path, even where nothing is read yet
        check_files_exist(pairs)
    cache = DecodedImageCache(int(cache_size * 2**20))
    if not read or image_size is None:
        return PairDataset(pairs, targets, image_size=image_size, cache=cache)
    bad_rows, failures = decode_pair_images(
        pairs, lambda path: cache.get(path, image_size), on_error)
    if failures:
        warn_unreadable(failures, np.flatnonzero(bad_rows), "are left out of training",
                        stacklevel=5)
        pairs, targets = pairs[~bad_rows], targets[~bad_rows]
        if len(pairs) == 0 or (require_both_classes and np.unique(targets).size < 2):
            raise ValueError(
                f"Too few pairs are left to train on after leaving out the "
                f"{bad_rows.sum()} with unreadable images: {len(pairs)} pairs with "
                f"labels {sorted(set(targets.tolist()))} (1.0 = match).")
    return PairDataset(pairs, targets, image_size=image_size, cache=cache)
