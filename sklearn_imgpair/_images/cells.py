"""Cells of X: the kinds of image a cell may hold, their content keys and the multi-image rules.

A cell of ``X`` holds one item: one image, or several images of one item.
:func:`as_cell` turns whatever the user gave into a normalised cell:

* a path (``str`` or :class:`os.PathLike`) stays a ``str``;
* an image in memory (the bytes of an image file, a PIL image, a ``uint8``
  array) becomes an :class:`InMemoryImage`, which carries the data and a key
  computed from its content, so that the same content given twice is read
  and embedded once;
* several images of one item (a list or tuple of the above, or paths joined
  by ``";"`` as in AutoMM's tables) become a ``tuple`` of the above, with at
  least two images; a list or tuple of one image is that image.

The rest of the package sees only these three kinds, and reads a cell's
images with :func:`cell_images`.
"""

import hashlib
import os
from numbers import Integral, Real

import numpy as np
import pandas as pd
from PIL import ExifTags, Image

from sklearn_imgpair._images.pixels import ENCODED_TYPES, array_problem, describe_image

__all__ = ["IMAGE_SEPARATOR", "InMemoryImage", "as_cell", "cell_images", "cell_key",
           "cell_names", "cell_sort_key", "describe_cell", "distinct_images", "distinct_paths",
           "file_key", "image_key", "image_names", "is_missing", "public_cell", "split_joined"]

#: Joins several images of one item in a cell of a pairs table (AutoMM's format).
IMAGE_SEPARATOR = ";"

_ACCEPTED = ("an image path (str or path-like), the bytes of an image file (bytes, bytearray, "
             "memoryview), a PIL image, a uint8 array of shape (H, W), (H, W, 3) or (H, W, 4), "
             "or a list or tuple of these (several images of one item)")


class InMemoryImage:
    """An image held in memory, identified by its content.

    Instances are made by :func:`as_cell`; they are immutable, and equal
    (with equal hashes) exactly when their keys are, so that
    :func:`distinct_paths` and the caches take the same content given twice
    for one image.

    Parameters
    ----------
    data : bytes, PIL.Image.Image or ndarray
        The bytes of an encoded image file, a PIL image or a read-only view
        of a ``uint8`` array; the caller's object is never modified.
    key : str
        ``"<kind>:<SHA-256 of the content>"``; for a PIL image the digest
        covers the mode, size, palette, transparency, EXIF orientation and
        pixels, for an array its shape, dtype and bytes.
    """

    __slots__ = ("data", "key")

    def __init__(self, data, key):
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "key", key)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable.")

    def __eq__(self, other):
        if not isinstance(other, InMemoryImage):
            return NotImplemented
        return self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __reduce__(self):  # DataLoader workers get copies
        return type(self), (self.data, self.key)

    def __repr__(self):
        return f"InMemoryImage({self.description})"

    @property
    def description(self):
        """What the image is, for messages: ``"bytes of length 1234 (...)"`` etc."""
        return describe_image(self.data)


def describe_cell(value):
    """A short ``repr`` of a cell for messages: a numpy scalar shows as its Python value."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_missing(value):
    """Whether ``value`` is None, ``pd.NA``, ``pd.NaT`` or a float NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, Real) and not isinstance(value, Integral) and np.isnan(value)


def split_joined(path):
    """The images of a path string: several where ``";"`` joins them, else ``path`` alone.

    A string that names an existing file is that file, even with a ``";"``
    in its name; otherwise ``"a.jpg;b.jpg"`` is the two images of one item.

    Returns
    -------
    parts : tuple of str
    """
    if IMAGE_SEPARATOR not in path or os.path.exists(path):
        return (path,)
    return tuple(path.split(IMAGE_SEPARATOR))


def _check_path(value, name):
    """``value`` as a path ``str``; errors name the cell."""
    path = os.fspath(value)
    if isinstance(path, bytes):
        raise TypeError(f"{name} must be a path string; got a path-like object whose path is "
                        f"bytes {describe_cell(path)}.")
    if not path:
        raise ValueError(f"{name} is an empty string; expected an image path.")
    if "\x00" in path:
        raise ValueError(f"{name} holds a NUL character, which no file path can contain: "
                         f"{describe_cell(value)}.")
    try:
        os.fsencode(path)
    except UnicodeError:
        raise ValueError(f"{name} cannot be encoded as a file path on this system: "
                         f"{describe_cell(value)}.") from None
    return str(path)


def _digest(kind, *parts):
    digest = hashlib.sha256(kind.encode())
    for part in parts:
        digest.update(part if isinstance(part, (bytes, np.ndarray)) else repr(part).encode())
    return f"{kind}:{digest.hexdigest()}"


def _pil_key(image):
    """The content key of a PIL image: what decides its pixels, hashed."""
    try:
        pixels = image.tobytes()  # loads a lazily opened image once
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # a broken file: read_pixels says why, under the on_error policy
        return f"pil-unreadable:{id(image)}"
    palette = image.getpalette() if image.mode in ("P", "PA") else None
    return _digest("pil", image.mode, image.size, palette, image.info.get("transparency"),
                   orientation, pixels)


def _in_memory(value, name):
    """An :class:`InMemoryImage` of bytes, a PIL image or an array; errors name the cell."""
    if isinstance(value, ENCODED_TYPES):
        data = value.tobytes() if isinstance(value, memoryview) else bytes(value)
        if not data:
            raise ValueError(f"{name}: bytes of length 0 are not an image.")
        return InMemoryImage(data, _digest("bytes", data))
    if isinstance(value, Image.Image):
        return InMemoryImage(value, _pil_key(value))
    problem = array_problem(value)
    if problem is not None:
        raise ValueError(f"{name}: {problem}.")
    view = value.view()
    view.flags.writeable = False
    return InMemoryImage(view, _digest("array", value.shape, value.dtype.str,
                                       np.ascontiguousarray(value)))


def _several(value, name, memo):
    """The images of a list or tuple: one image, or a tuple of two or more."""
    kind = type(value).__name__
    if len(value) == 0:
        raise ValueError(f"{name}: an empty {kind} holds no image; an item of several images "
                         "needs at least one.")
    images = []
    for index, part in enumerate(value):
        part_name = f"{name} (image {index + 1} of {len(value)})"
        if isinstance(part, (list, tuple)):
            raise TypeError(f"{part_name} is a {type(part).__name__}; the images of one item "
                            "are listed once, not in nested lists.")
        images.extend(cell_images(as_cell(part, part_name, memo)))
    return images[0] if len(images) == 1 else tuple(images)


def as_cell(value, name, memo=None):
    """Normalise one cell of ``X``: a path ``str``, an :class:`InMemoryImage` or a tuple of them.

    Parameters
    ----------
    value : object
        The cell as given: a path (``str`` or path-like; paths joined by
        ``";"`` are several images unless the whole string names an
        existing file), the bytes of an image file (``bytes``,
        ``bytearray``, ``memoryview``), a :class:`PIL.Image.Image`, a
        ``uint8`` array of shape ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``,
        or a list or tuple of these (several images of one item; a list or
        tuple of one image is that image). Normalised cells pass unchanged.
    name : str
        How errors refer to the cell, e.g. ``"X[3, 1]"``.
    memo : dict, default=None
        In-memory images already normalised in this call, by ``id``: one
        image object in many cells (a query paired with every gallery image)
        is hashed once. Valid only while the caller holds ``X``.

    Returns
    -------
    cell : str, InMemoryImage or tuple
        A tuple holds two or more paths and :class:`InMemoryImage`.

    Raises
    ------
    ValueError
        If the cell is missing (None, NaN), an empty string or list, empty
        bytes, a path with a NUL character, or an array of another dtype or
        shape.
    TypeError
        If the cell is of no accepted kind (numpy bytes from a byte-string
        array included: paths are ``str``), or a list nests lists.
    """
    if isinstance(value, InMemoryImage):
        return value
    if isinstance(value, np.bytes_):
        raise TypeError(f"{name} holds numpy bytes {describe_cell(value)} (from a byte-string "
                        "array); give paths as str and encoded images as Python bytes.")
    if isinstance(value, (str, os.PathLike)):
        path = _check_path(value, name)
        parts = split_joined(path)
        if len(parts) == 1:
            return path
        return tuple(_check_path(part, f"{name} (image {index + 1} of {len(parts)})")
                     for index, part in enumerate(parts))
    if isinstance(value, (*ENCODED_TYPES, Image.Image, np.ndarray)):
        if memo is None:
            return _in_memory(value, name)
        if id(value) not in memo:
            memo[id(value)] = _in_memory(value, name)
        return memo[id(value)]
    if isinstance(value, (list, tuple)):
        return _several(value, name, memo)
    if is_missing(value):
        raise ValueError(f"{name} is missing ({describe_cell(value)}); every cell must hold "
                         "an image.")
    raise TypeError(f"{name} must be {_ACCEPTED}; got {type(value).__name__} "
                    f"{describe_cell(value)}.")


def cell_images(cell):
    """The images of a cell: a tuple of paths and :class:`InMemoryImage`.

    A normalised cell (see :func:`as_cell`) gives its images; a path string
    not yet normalised is split as :func:`split_joined` splits it.
    """
    if isinstance(cell, tuple):
        return cell
    if isinstance(cell, str):
        return split_joined(cell)
    return (cell,)


def public_cell(cell):
    """A normalised cell as the caller gave it: paths, in-memory images, tuples of them."""
    if isinstance(cell, tuple):
        return tuple(public_cell(part) for part in cell)
    return cell.data if isinstance(cell, InMemoryImage) else cell


def cell_sort_key(cell):
    """A ``str`` that orders normalised cells: paths by themselves, after the other cells.

    Distinct cells get distinct keys (no path holds a NUL character, with
    which the keys of the other cells start).
    """
    if isinstance(cell, str):
        return cell
    if isinstance(cell, InMemoryImage):
        return "\x00" + cell.key
    return "\x00" + repr(tuple(cell_sort_key(image) for image in cell))


def distinct_paths(cells):
    """The distinct cells of ``cells``, in the order of their first occurrence.

    Paths are equal when their strings are, in-memory images when their
    content is (:class:`InMemoryImage`), multi-image cells when their images
    are, in order.

    Parameters
    ----------
    cells : ndarray of normalised cells
        Any shape; read in C order (row by row for pairs).

    Returns
    -------
    unique : ndarray of shape (n_unique,), dtype=object
        Each cell once, in the order it first occurs: errors about them come
        in row order.
    first : ndarray of shape (n_unique,)
        Flat position of each cell's first occurrence (increasing).
    inverse : ndarray of shape (cells.size,)
        ``unique[inverse]`` rebuilds the flattened ``cells``.
    """
    flat = np.asarray(cells, dtype=object).ravel()
    inverse, unique = pd.factorize(flat)
    first = np.full(len(unique), -1, dtype=np.intp)
    positions = np.arange(len(inverse) - 1, -1, -1)
    first[inverse[::-1]] = positions  # the last write, the earliest position, wins
    # Rebuilt from ``flat``: factorize may turn a column of tuples into other objects.
    return flat[first], first, inverse.astype(np.intp)


def distinct_images(cells):
    """The distinct single images of ``cells`` and where each cell's images are among them.

    Parameters
    ----------
    cells : ndarray of shape (n_cells,), dtype=object
        Distinct normalised cells (from :func:`distinct_paths`), or raw path
        strings, whose ``";"``-joined paths are split.

    Returns
    -------
    images : ndarray of shape (n_images,), dtype=object
        Paths and :class:`InMemoryImage`, each once, in order of first
        occurrence.
    image_index : ndarray of shape (n_entries,)
        The images of every cell in turn, as indices into ``images``.
    offsets : ndarray of shape (n_cells + 1,)
        Cell ``i``'s images are ``images[image_index[offsets[i]:offsets[i + 1]]]``.
    first : ndarray of shape (n_images,)
        Position in ``image_index`` of each image's first occurrence.
    """
    parts = [cell_images(cell) for cell in cells]
    counts = np.fromiter(map(len, parts), dtype=np.intp, count=len(parts))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
    if offsets[-1] == len(cells):  # one image per cell: the cells are the images
        images = np.empty(len(cells), dtype=object)
        images[:] = [images_of_cell[0] for images_of_cell in parts]
        index = np.arange(len(cells), dtype=np.intp)
        return images, index, offsets, index
    entries = np.empty(int(offsets[-1]), dtype=object)
    entries[:] = [image for images in parts for image in images]
    images, first, image_index = distinct_paths(entries)
    return images, image_index, offsets, first


def cell_names(positions, shape):
    """How errors refer to cells of ``X``: ``"X[row]"``, or ``"X[row, column]"`` for pairs.

    Parameters
    ----------
    positions : sequence of int
        Flat positions (C order) in an array of ``shape``, as
        :func:`distinct_paths` returns them.
    shape : tuple of int
        ``(n_rows,)`` for one column of images, ``(n_rows, n_columns)`` for pairs.

    Returns
    -------
    names : list of str
    """
    if len(shape) == 1:
        return [f"X[{position}]" for position in positions]
    n_columns = shape[1]
    return [f"X[{position // n_columns}, {position % n_columns}]" for position in positions]


def image_names(cells, offsets, first, names_of_cells):
    """How errors refer to each image of :func:`distinct_images`: its first cell and place.

    Parameters
    ----------
    cells : ndarray of shape (n_cells,), dtype=object
        The cells given to :func:`distinct_images`.
    offsets, first : ndarray
        As returned by :func:`distinct_images`.
    names_of_cells : sequence of str
        The name of each cell, e.g. ``"X[3, 1]"``.

    Returns
    -------
    names : list of str
        ``"X[3, 1]"`` for a cell of one image, ``"X[3, 1] (image 2 of 3)"``
        for an image of a multi-image cell.
    """
    owners = np.searchsorted(offsets, first, side="right") - 1
    names = []
    for entry, owner in zip(first.tolist(), owners.tolist()):
        name, n_images = names_of_cells[owner], offsets[owner + 1] - offsets[owner]
        if n_images > 1:
            name = f"{name} (image {entry - offsets[owner] + 1} of {n_images})"
        names.append(name)
    return names


def file_key(path):
    """Identify an image file by absolute path, size and modification time.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    stat = os.stat(path)
    return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def image_key(image):
    """Identify one image: a file by :func:`file_key`, an in-memory image by its content.

    Parameters
    ----------
    image : str or InMemoryImage
        A path, or an in-memory image of ``check_pairs``, whose ``key`` is a
        digest of its content: the same bytes, PIL image or array, given
        again in another call, hits the cache.

    Raises
    ------
    FileNotFoundError
        If ``image`` is a path that does not exist.
    """
    if isinstance(image, str):
        return file_key(image)
    return f"content|{image.key}"


def cell_key(cell):
    """The content key of a normalised cell: its images' :func:`image_key`, in order.

    Returns
    -------
    key : str or None
        None when a file of the cell does not exist (reading it reports that).
    """
    try:
        return "\x00".join(image_key(image) for image in cell_images(cell))
    except FileNotFoundError:
        return None

