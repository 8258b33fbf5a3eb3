"""The ``search`` and ``dedup`` subcommands: a catalogue of images searched with a saved matcher."""

import contextlib
import os
import warnings

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.utils import Bunch

from sklearn_imgpair._cli.commands import (
    _CHUNK_SIZE,
    _LIBRARY_CELL,
    CommandError,
    _check_writable,
    _progress,
    _report_unreadable,
    _set_batch_size,
    check_plot_path,
    collect_unreadable,
    load_model,
)
from sklearn_imgpair._cli.evaluation import require_matplotlib
from sklearn_imgpair._images.unreadable import UnreadableImageWarning
from sklearn_imgpair._io.atomic import write_atomically
from sklearn_imgpair._io.device import check_device, device_type
from sklearn_imgpair.datasets import read_pairs_csv
# load_image_folder's walk of a class folder: both list the same files as images.
from sklearn_imgpair.datasets._folder import IMAGE_EXTENSIONS, _walk_images
from sklearn_imgpair.datasets._pairs_csv import csv_location

__all__ = ["duplicate_groups", "list_image_files", "plot_search", "read_images", "run_dedup",
           "run_search"]

# Matches shown per query in a --plot picture, whatever --k.
_PLOTTED_MATCHES = 10
# Side in pixels of the thumbnails drawn in a --plot picture.
_THUMBNAIL_SIZE = 160


# ----------------------------------------------------------------------
# input: a folder of images or one column of a CSV file
# ----------------------------------------------------------------------


def list_image_files(folder):
    """Every image file under ``folder``, at any depth, sorted.

    Files count as images as in :func:`~sklearn_imgpair.datasets.load_image_folder`
    (which walks its class folders the same way): by their name's ending,
    :data:`IMAGE_EXTENSIONS` in any case; hidden files and folders (their
    names start with ``.``) are skipped. Unlike ``load_image_folder``, images
    directly in ``folder`` count too: a catalogue needs no class folders.

    Parameters
    ----------
    folder : str or path-like

    Returns
    -------
    paths : list of str
        Absolute paths, sorted.
    """
    return sorted(_walk_images(os.path.abspath(folder), IMAGE_EXTENSIONS, follow_links=False))


def _folder_images(folder, option):
    paths = list_image_files(folder)
    if not paths:
        raise CommandError(f"{option} folder {folder!r} holds no image file (looked for "
                           f"{', '.join(IMAGE_EXTENSIONS)} in it and its sub-folders).")
    return Bunch(paths=np.array(paths, dtype=object), source=folder, option=option,
                 where=lambda index: f"{option} folder {folder!r}")


def _csv_images(path, column, option, check_files):
    """The distinct images of one column of a CSV file, relative paths resolved."""
    if column is None:
        try:
            columns = [str(name) for name in pd.read_csv(path, nrows=0).columns]
        except (ValueError, OSError) as exc:  # pandas' parser errors are ValueErrors
            reason = " ".join(str(exc).split())
            raise CommandError(f"Cannot read {option} {path!r} as CSV: {reason}") from None
        if columns and columns[0].startswith("Unnamed: 0"):
            columns = columns[1:]  # the index that DataFrame.to_csv writes, as read_pairs_csv
        if len(columns) != 1:
            raise CommandError(f"{option} {path!r} has {len(columns)} columns {columns}; name "
                               "the column of image paths with --image-column.")
        column = columns[0]
    frame = read_pairs_csv(path, image_columns=[column])
    paths, rows = np.unique(frame[column].to_numpy(dtype=object), return_index=True)
    order = np.argsort(rows)  # distinct images, in the order of the file
    paths, rows = paths[order], rows[order]
    if check_files:
        for row, image in zip(rows, paths):
            if not os.path.isfile(image):
                state = "is not a file" if os.path.exists(image) else "does not exist"
                raise CommandError(f"{csv_location(path, int(row), column)}: image {image!r} "
                                   f"{state}.")
    return Bunch(paths=paths, source=path, option=option,
                 where=lambda index: csv_location(path, int(rows[index]), column))


def read_images(source, column, option, *, check_files=True):
    """The images that ``--gallery``, ``--query`` or ``--images`` name.

    Parameters
    ----------
    source : str
        A folder (every image file under it) or a CSV file (one column of
        image paths, relative to the file's folder; each distinct path once).
    column : str or None
        The CSV column; None takes the file's only column.
    option : str
        The option, for error messages.
    check_files : bool, default=True
        Fail on the first CSV cell whose image is not a file.

    Returns
    -------
    images : Bunch
        ``paths`` (absolute, object array), ``source``, ``option`` and
        ``where(index)``, the place of an image in terms of the input (CSV
        line and column, or the folder) for error messages.
    """
    if os.path.isdir(source):
        return _folder_images(source, option)
    if not os.path.exists(source):
        raise CommandError(f"{option} {source!r} does not exist; give a CSV file or a folder "
                           "of images.")
    return _csv_images(source, column, option, check_files)


def _located(message, images, offset=0):
    """``message`` with the library's ``X[i]`` replaced by the place of image ``offset + i``."""
    return _LIBRARY_CELL.sub(lambda match: images.where(offset + int(match[1])), str(message))


@contextlib.contextmanager
def _reading(images, found, offset=0):
    """Turn unreadable-image errors and warnings of the block into the input's terms.

    Errors become a :class:`CommandError`; the failures of
    :class:`UnreadableImageWarning` are stored in ``found``, once per image
    and reason; other warnings pass through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreadableImageWarning)
        try:
            yield
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(_located(exc, images, offset)) from None
    collect_unreadable(caught, found, lambda failure: _located(failure, images, offset))


def _check_device(device):
    """Fail unless ``--device`` names a torch device that this machine has (None: any)."""
    if device is None:
        return
    try:
        check_device(device)
    except ValueError as exc:
        raise CommandError(f"--device: {exc}") from None
    if device_type(device) == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {device!r}: this machine has no CUDA device; use "
                           "--device cpu or auto.")


def _load(args):
    """The model of ``--model`` on ``--device``, with ``--batch-size`` and ``--on-error``."""
    _check_device(args.device)
    clf = load_model(args.model, args.on_error, device=args.device)
    return _set_batch_size(clf, args.batch_size)


# ----------------------------------------------------------------------
# search
# ----------------------------------------------------------------------


def _check_k(k, n_gallery, gallery):
    if k > n_gallery:
        raise CommandError(f"--k {k} is more than the {n_gallery} images of the gallery "
                           f"{gallery!r}; give --k {n_gallery} or less.")


def _search(neighbors, queries, k, args):
    """Distances, gallery rows and match probabilities of each query's k nearest images."""
    distances, indices, unreadable = [], [], {}
    with _progress(len(queries.paths), "Searching", unit="image", args=args) as bar:
        for start in range(0, len(queries.paths), _CHUNK_SIZE):
            with _reading(queries, unreadable, offset=start):
                chunk_distances, chunk_indices = neighbors.kneighbors(
                    queries.paths[start:start + _CHUNK_SIZE], n_neighbors=k)
            distances.append(chunk_distances)
            indices.append(chunk_indices)
            bar.update(len(chunk_indices))
    distances, indices = np.concatenate(distances), np.concatenate(indices)
    return distances, indices, neighbors.match_proba(distances), unreadable


def run_search(args):
    """``search``: the k most similar gallery images of each query image."""
    from sklearn_imgpair import ImageNeighbors

    if os.path.splitext(args.output)[1].lower() != ".csv":
        raise CommandError(f"--output must end in .csv; got {args.output!r}.")
    check_files = args.on_error == "raise"
    gallery = read_images(args.gallery, args.image_column, "--gallery", check_files=check_files)
    queries = read_images(args.query, args.image_column, "--query", check_files=check_files)
    _check_k(args.k, len(gallery.paths), args.gallery)
    if args.plot is not None:
        check_plot_path(args.plot)
    clf = _load(args)
    _check_writable(args.output, "--output")
    print(f"Embedding the {len(gallery.paths)} gallery images of {args.gallery}", flush=True)
    left_out = {}
    with _reading(gallery, left_out):
        neighbors = ImageNeighbors(classifier=clf, on_error=args.on_error).fit(gallery.paths)
    _report_unreadable(left_out, "they are left out of the gallery")
    _check_k(args.k, neighbors.n_samples_fit_, args.gallery)
    distances, indices, proba, unreadable = _search(neighbors, queries, args.k, args)
    _report_unreadable(unreadable, "their queries have no matches in the output")
    readable = indices[:, 0] >= 0
    n_queries, k = int(readable.sum()), indices.shape[1]
    table = pd.DataFrame({
        "query": np.repeat(queries.paths[readable], k),
        "rank": np.tile(np.arange(1, k + 1), n_queries),
        "match": neighbors.gallery_[indices[readable].ravel()],
        "probability": proba[readable].ravel(),
        "distance": distances[readable].ravel(),
    })
    path = write_atomically(args.output, lambda partial: table.to_csv(partial, index=False))
    n_matches = int((proba[readable] > neighbors.match_threshold_).sum())
    print(f"Wrote the {k} nearest gallery images of {n_queries} queries to {path} "
          f"({n_matches} above the model's threshold {neighbors.match_threshold_:g})")
    if args.plot is not None and n_queries:
        shown = np.flatnonzero(readable)[:args.plot_queries]
        plot_path = plot_search(
            args.plot, queries.paths[shown], neighbors.gallery_[indices[shown]], proba[shown],
            threshold=neighbors.match_threshold_,
            title=f"{os.path.basename(args.model)}: nearest images of {args.gallery}")
        print(f"Drew {len(shown)} queries and their matches in {plot_path}")
    return 0


def _thumbnail(path):
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((_THUMBNAIL_SIZE, _THUMBNAIL_SIZE))
        return np.asarray(image)


def _short_name(path, width=22):
    name = os.path.basename(path)
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _frame(axes, colour, width):
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def plot_search(path, queries, matches, probabilities, *, threshold, title):
    """Draw each query beside its nearest gallery images, one row a query.

    Each match is titled with its match probability, framed in green above
    ``threshold`` and in grey below it. The figure is drawn by matplotlib's
    Agg canvas without pyplot's global state and written atomically.

    Parameters
    ----------
    path : str or path-like
        File to write; its suffix, one of :data:`PLOT_SUFFIXES`, sets the format.
    queries : ndarray of shape (n_queries,)
        Query image paths.
    matches : ndarray of shape (n_queries, n_matches)
        Gallery image paths, nearest first; the first 10 are drawn.
    probabilities : ndarray of shape (n_queries, n_matches)
        Their match probabilities.
    threshold : float
        Probability above which a match is framed in green.
    title : str
        The figure's title.

    Returns
    -------
    path : str
        The absolute path written.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matches = np.asarray(matches)[:, :_PLOTTED_MATCHES]
    n_rows, n_columns = len(queries), 1 + matches.shape[1]
    figure = Figure(figsize=(1.7 * n_columns + 0.3, 2.0 * n_rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    grid = np.atleast_2d(figure.subplots(n_rows, n_columns, squeeze=False))
    for row, query in enumerate(queries):
        axes = grid[row, 0]
        axes.imshow(_thumbnail(query))
        axes.set_title("query", fontsize=9, fontweight="bold", color="tab:blue")
        axes.set_xlabel(_short_name(query), fontsize=7)
        _frame(axes, "tab:blue", 3)
        for column, (match, probability) in enumerate(zip(matches[row], probabilities[row]),
                                                      start=1):
            axes = grid[row, column]
            axes.imshow(_thumbnail(match))
            above = probability > threshold
            axes.set_title(f"{column}. p = {probability:.3f}", fontsize=9,
                           color="tab:green" if above else "dimgrey")
            axes.set_xlabel(_short_name(match), fontsize=7)
            _frame(axes, "tab:green" if above else "lightgrey", 3 if above else 1)
    figure.suptitle(f"{title}\n(p: match probability; green: above the threshold "
                    f"{threshold:g})", fontsize=10)
    file_format = os.path.splitext(path)[1][1:].lower()
    return write_atomically(path, lambda partial: figure.savefig(partial, format=file_format))


# ----------------------------------------------------------------------
# dedup
# ----------------------------------------------------------------------


def duplicate_groups(duplicates):
    """Number of groups that the duplicate pairs join (connected components) and their images.

    Parameters
    ----------
    duplicates : DataFrame
        Columns ``Image1`` and ``Image2``, as :func:`find_duplicates` returns.

    Returns
    -------
    n_groups : int
    n_images : int
        Images that are in a pair.
    """
    codes, images = pd.factorize(pd.concat([duplicates["Image1"], duplicates["Image2"]]))
    n_pairs, n_images = len(duplicates), len(images)
    graph = sparse.coo_matrix((np.ones(n_pairs), (codes[:n_pairs], codes[n_pairs:])),
                              shape=(n_images, n_images))
    n_groups = connected_components(graph, directed=False)[0] if n_images else 0
    return int(n_groups), n_images


def run_dedup(args):
    """``dedup``: the pairs of images that the model calls a match, and their groups."""
    from sklearn_imgpair import find_duplicates

    if os.path.splitext(args.output)[1].lower() != ".csv":
        raise CommandError(f"--output must end in .csv; got {args.output!r}.")
    images = read_images(args.images, args.image_column, "--images",
                         check_files=args.on_error == "raise")
    clf = _load(args)
    _check_writable(args.output, "--output")
    threshold = clf.threshold if args.threshold is None else args.threshold
    print(f"Looking for duplicates among the {len(images.paths)} images of {args.images}",
          flush=True)
    unreadable = {}
    with _reading(images, unreadable):
        duplicates = find_duplicates(images.paths, clf, threshold=threshold,
                                     n_neighbors=args.n_neighbors, on_error=args.on_error)
    _report_unreadable(unreadable, "they are left out")
    path = write_atomically(args.output,
                            lambda partial: duplicates.to_csv(partial, index=False))
    n_groups, n_grouped = duplicate_groups(duplicates)
    print(f"Found {len(duplicates)} duplicate pairs in {n_groups} groups ({n_grouped} images) "
          f"at threshold {threshold:g}; wrote them to {path}")
    return 0
