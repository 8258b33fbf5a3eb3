"""load_image_folder and make_pairs: your own images, one sub-folder per class, as pair tables."""

import os
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder", "make_pairs"]

# File name endings that PIL opens out of the box, compared in lower case.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def _check_extensions(extensions):
    """A tuple of lower-case endings, each with its leading dot."""
    if extensions is None:
        return IMAGE_EXTENSIONS
    if isinstance(extensions, str):
        extensions = [extensions]
    checked = []
    for extension in extensions:
        if not isinstance(extension, str):
            raise TypeError(f"extensions must be file name endings such as '.png'; got "
                            f"{type(extension).__name__} {extension!r}.")
        if not extension.strip("."):
            raise ValueError(f"extensions must be file name endings such as '.png'; got "
                             f"{extension!r}.")
        checked.append("." + extension.lower().lstrip("."))
    if not checked:
        raise ValueError("extensions is empty; give one file name ending at least, or None "
                         f"for {IMAGE_EXTENSIONS}.")
    return tuple(checked)


def _is_hidden(name):
    return name.startswith(".")


def _walk_images(class_folder, extensions, follow_links):
    """Image files under ``class_folder``, at any depth, skipping hidden names and cycles."""
    visited = set()
    for folder, subfolders, files in os.walk(class_folder, followlinks=follow_links):
        real = os.path.realpath(folder)
        if real in visited:  # a link back up the tree: walked already
            subfolders[:] = []
            continue
        visited.add(real)
        subfolders[:] = [name for name in subfolders if not _is_hidden(name)]
        for name in files:
            if not _is_hidden(name) and name.lower().endswith(extensions):
                yield os.path.join(folder, name)


@validate_params(
    {
        "root": [str, os.PathLike],
        "extensions": [str, list, tuple, None],
        "follow_links": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_image_folder(root, *, extensions=None, follow_links=False):
    """List the images of a folder with one sub-folder per class.

    The layout of :class:`torchvision.datasets.ImageFolder`: each immediate
    sub-folder of ``root`` is a class, named after the sub-folder, and holds
    its images, at any depth (``root/dog/a.png`` and ``root/dog/2024/b.png``
    are both dogs). Files directly in ``root`` belong to no class and are
    left out. Images of one class show the same thing, so the table gives
    identity labels for :func:`make_pairs`, for
    :func:`~sklearn_imgpair.metrics.make_retrieval_scorer` and for grouped
    cross-validation.

    Parameters
    ----------
    root : str or path-like
        The folder of class sub-folders.
    extensions : str or sequence of str, default=None
        File name endings of the images, with or without the dot, in any
        case (``"png"`` finds ``a.PNG``). None takes those that PIL opens
        out of the box: ``.bmp``, ``.gif``, ``.jpeg``, ``.jpg``, ``.png``,
        ``.tif``, ``.tiff``, ``.webp``.
    follow_links : bool, default=False
        Walk into folders that are symbolic links (class folders included).
        A link back up the tree is walked once. Linked files are listed
        either way.

    Returns
    -------
    images : pandas.DataFrame
        One row per image, columns ``path`` (``os.path.join(root, class,
        ...)``, so relative when ``root`` is) and ``label`` (the class
        folder's name), sorted by label, then path.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist.
    ValueError
        If ``root`` is a file, has no class sub-folder, or its class folders
        hold no file with one of ``extensions``; the message names ``root``
        and the extensions looked for. Also if ``extensions`` is empty.
    TypeError
        If an entry of ``extensions`` is not a str.

    See Also
    --------
    make_pairs : Labelled pairs of these images, to fit an
        :class:`~sklearn_imgpair.ImagePairClassifier`.
    read_pairs_csv : Pairs listed in a CSV file instead.

    Notes
    -----
    Unlike ``ImageFolder``, hidden files and folders (names that start with
    a dot, such as ``.ipynb_checkpoints``) are skipped, and a class folder
    without images is no error: it is simply absent from the table. Files
    are listed by name, not opened; an unreadable image shows up when it is
    read.

    Examples
    --------
    >>> import os
    >>> from PIL import Image
    >>> from sklearn_imgpair.datasets import load_image_folder
    >>> for label, name in [("cat", "1.png"), ("dog", "2.jpg"), ("dog", "1.png")]:
    ...     os.makedirs(os.path.join(tmp_dir, "pets", label), exist_ok=True)
    ...     Image.new("RGB", (8, 8)).save(os.path.join(tmp_dir, "pets", label, name))
    >>> images = load_image_folder(os.path.join(tmp_dir, "pets"))
    >>> images["label"].tolist(), [os.path.basename(path) for path in images["path"]]
    (['cat', 'dog', 'dog'], ['1.png', '1.png', '2.jpg'])
    """
    root = os.fspath(root)
    if not os.path.exists(root):
        raise FileNotFoundError(f"Image folder not found: {root!r}.")
    if not os.path.isdir(root):
        raise ValueError(f"{root!r} is a file; load_image_folder needs a folder with one "
                         "sub-folder of images per class.")
    extensions = _check_extensions(extensions)
    with os.scandir(root) as entries:
        classes = sorted(entry.name for entry in entries if not _is_hidden(entry.name)
                         and entry.is_dir(follow_symlinks=follow_links))
    looked_for = f"(extensions {', '.join(extensions)})"
    if not classes:
        raise ValueError(f"Image folder {root!r} has no class sub-folder: put the images of "
                         f"each class in a sub-folder named after it {looked_for}.")
    rows = [(path, label) for label in classes
            for path in _walk_images(os.path.join(root, label), extensions, follow_links)]
    if not rows:
        raise ValueError(f"The class folders of {root!r} ({len(classes)}: "
                         f"{', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}) hold "
                         f"no image {looked_for}.")
    images = pd.DataFrame(rows, columns=["path", "label"])
    return images.sort_values(["label", "path"], kind="stable", ignore_index=True)


def _check_paths_and_labels(paths, labels):
    """``paths`` as a list of str and integer codes of ``labels``, with clear errors."""
    paths = list(paths.to_numpy() if isinstance(paths, (pd.Series, pd.Index)) else paths)
    labels = np.asarray(labels, dtype=object)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one label per image (1-D); got shape {labels.shape}.")
    if len(paths) != len(labels):
        raise ValueError(f"paths has {len(paths)} entries but labels has {len(labels)}; give "
                         "one label per image.")
    seen = {}
    for row, path in enumerate(paths):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"paths[{row}] must be a str or path-like; got "
                            f"{type(path).__name__} {path!r}.")
        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError(f"paths[{row}] must be a str or path-like of str; got {path!r}.")
        path = str(path)
        if path in seen:
            raise ValueError(f"paths[{row}] repeats paths[{seen[path]}] ({path!r}); each image "
                             "must be listed once, or it would be paired with itself.")
        seen[path] = row
    missing = np.flatnonzero(pd.isna(labels))
    if len(missing):
        raise ValueError(f"labels[{missing[0]}] is missing (NaN or None); every image needs "
                         "a label.")
    codes, uniques = pd.factorize(labels)
    return list(seen), codes.astype(np.int64), uniques


def _pair_counts(codes):
    """Images sorted by label, and for each the same-label and other-label partners after it.

    In that order, image ``i`` has the same label as the images ``i + 1`` up
    to the end of its label's run, and another label than every image after
    that run, so that both kinds of unordered pairs can be numbered (and
    drawn) without being listed.
    """
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    run_end = np.searchsorted(ordered, ordered, side="right")
    position = np.arange(len(codes))
    return order, run_end, run_end - position - 1, len(codes) - run_end


def _unrank(ranks, n_partners, first_partner):
    """Pairs ``(i, j)`` of sorted positions numbered by ``ranks`` among the partners of each i."""
    cumulative = np.cumsum(n_partners)
    first = np.searchsorted(cumulative, ranks, side="right")
    before = cumulative[first] - n_partners[first]
    return first, first_partner[first] + (ranks - before)


@validate_params(
    {
        "paths": ["array-like"],
        "labels": ["array-like"],
        "n_pairs": [Interval(Integral, 1, None, closed="left")],
        "positive_fraction": [Interval(Real, 0, 1, closed="both")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_pairs(paths, labels, *, n_pairs, positive_fraction=0.5, random_state=None):
    """Draw labelled image pairs from images with class labels.

    A pair of two images with the same label is a match (``Label`` 1), a pair
    with different labels is not (``Label`` 0), as in the tables of
    :func:`make_image_pairs` and of the AutoMM image-matching tutorial. The
    pairs are distinct unordered pairs of distinct images, drawn uniformly
    among those of each kind without listing them all, so millions of images
    are fine; each pair's side (``Image1`` or ``Image2``) and the row order
    are random.

    Parameters
    ----------
    paths : array-like of str or path-like of shape (n_images,)
        Image paths, each listed once (``load_image_folder(root)["path"]``).
    labels : array-like of shape (n_images,)
        Class of each image, any hashable values (``load_image_folder(root)
        ["label"]``).
    n_pairs : int
        Number of pairs.
    positive_fraction : float, default=0.5
        Fraction of matching pairs: exactly
        ``round(n_pairs * positive_fraction)`` (Python's ``round``) are
        matches, the rest are not.
    random_state : int, RandomState instance or None, default=None
        Seed of the draw; an int gives the same pairs every time.

    Returns
    -------
    pairs : pandas.DataFrame
        ``n_pairs`` rows, columns ``Image1``, ``Image2`` (the paths as str)
        and ``Label`` (1 or 0).

    Raises
    ------
    ValueError
        If ``paths`` and ``labels`` differ in length, a path is listed twice,
        a label is missing, or there are fewer pairs of a kind than asked for
        (for example all images share one label, so no pair is a
        non-match); the message gives both numbers.
    TypeError
        If a path is not a str or path-like.

    See Also
    --------
    load_image_folder : Paths and labels from a folder of class sub-folders.
    make_image_pairs : A synthetic data set in the same format.

    Examples
    --------
    >>> from sklearn_imgpair.datasets import make_pairs
    >>> paths = ["cat1.png", "cat2.png", "cat3.png", "dog1.png", "dog2.png"]
    >>> labels = ["cat", "cat", "cat", "dog", "dog"]
    >>> pairs = make_pairs(paths, labels, n_pairs=6, random_state=0)
    >>> list(pairs.columns), pairs["Label"].tolist().count(1)
    (['Image1', 'Image2', 'Label'], 3)
    """
    paths, codes, uniques = _check_paths_and_labels(paths, labels)
    n_positive = round(n_pairs * positive_fraction)
    n_negative = n_pairs - n_positive
    order, run_end, n_same, n_other = _pair_counts(codes)
    n_positive_total, n_negative_total = int(n_same.sum()), int(n_other.sum())
    asked = f"n_pairs={n_pairs}, positive_fraction={positive_fraction}"
    if n_positive > n_positive_total:
        raise ValueError(
            f"make_pairs cannot draw {n_positive} matching pairs ({asked}): the "
            f"{len(paths)} images give {n_positive_total} pairs of the same label."
        )
    if n_negative > n_negative_total:
        detail = (f"all {len(paths)} images have the label {uniques[0]!r}, so no pair is a "
                  "non-match; give images of two labels or more, or positive_fraction=1.0"
                  if len(uniques) == 1 else
                  f"the {len(paths)} images give {n_negative_total} pairs of different labels")
        raise ValueError(f"make_pairs cannot draw {n_negative} non-matching pairs ({asked}): "
                         f"{detail}.")

    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    rng = np.random.default_rng(seed)
    position = np.arange(len(paths))
    first, second = [], []
    for n_drawn, n_total, n_partners, first_partner in (
            (n_positive, n_positive_total, n_same, position + 1),
            (n_negative, n_negative_total, n_other, run_end)):
        # Generator.choice draws from a large range without building it.
        ranks = rng.choice(n_total, size=n_drawn, replace=False)
        i, j = _unrank(ranks, n_partners, first_partner)
        first.append(order[i])
        second.append(order[j])
    first, second = np.concatenate(first), np.concatenate(second)
    flip = rng.random(n_pairs) < 0.5
    first, second = np.where(flip, second, first), np.where(flip, first, second)
    label = np.repeat(np.array([1, 0]), [n_positive, n_negative])
    shuffle = rng.permutation(n_pairs)
    paths = np.asarray(paths, dtype=object)
    return pd.DataFrame({"Image1": paths[first[shuffle]], "Image2": paths[second[shuffle]],
                         "Label": label[shuffle]})
