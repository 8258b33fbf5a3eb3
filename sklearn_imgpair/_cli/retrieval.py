"""The ``search`` subcommand: a catalogue of images searched with a saved matcher."""

import os

import numpy as np
import pandas as pd
import torch
from PIL import Image

from sklearn_imgpair._cli.commands import (
    CHUNK_SIZE,
    check_plot_path,
    check_writable,
    image_columns,
    load_model,
    progress,
    set_batch_size,
)
from sklearn_imgpair._cli.evaluation import require_matplotlib
from sklearn_imgpair._cli.inputs import CommandError, read_images, reading, report_unreadable
from sklearn_imgpair._cli.report import check_report_path, report_search
from sklearn_imgpair._io.atomic import write_atomically
from sklearn_imgpair._nn.device import check_device, device_type

__all__ = ["load_on_device", "plot_search", "run_search"]

# Matches shown per query in a --plot picture, whatever --n-neighbors.
_PLOTTED_MATCHES = 10
# Side in pixels of the thumbnails drawn in a --plot picture.
_THUMBNAIL_SIZE = 160


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


def load_on_device(args):
    """The model of ``--model`` on ``--device``, with ``--batch-size`` and ``--on-error``."""
    _check_device(args.device)
    clf = load_model(args.model, args.on_error, device=args.device)
    return set_batch_size(clf, args.batch_size)


# ----------------------------------------------------------------------
# search
# ----------------------------------------------------------------------


def _check_n_neighbors(n_neighbors, n_gallery, gallery):
    if n_neighbors > n_gallery:
        raise CommandError(f"--n-neighbors {n_neighbors} is more than the {n_gallery} images of "
                           f"the gallery {gallery!r}; give --n-neighbors {n_gallery} or less.")


def _search(neighbors, queries, k, args):
    """Distances, gallery rows and match probabilities of each query's k nearest images."""
    distances, indices, unreadable = [], [], {}
    with progress(len(queries.paths), "Searching", unit="image", args=args) as bar:
        for start in range(0, len(queries.paths), CHUNK_SIZE):
            with reading(queries, unreadable, offset=start):
                chunk_distances, chunk_indices = neighbors.kneighbors(
                    queries.paths[start:start + CHUNK_SIZE], n_neighbors=k)
            distances.append(chunk_distances)
            indices.append(chunk_indices)
            bar.update(len(chunk_indices))
    distances, indices = np.concatenate(distances), np.concatenate(indices)
    return distances, indices, neighbors.match_proba(distances), unreadable


def run_search(args):
    """``search``: the ``n_neighbors`` most similar gallery images of each query image."""
    from sklearn_imgpair import ImageNeighbors

    if os.path.splitext(args.output)[1].lower() != ".csv":
        raise CommandError(f"--output must end in .csv; got {args.output!r}.")
    if args.report is not None:
        check_report_path(args.report)
    check_files = args.on_error == "raise"
    gallery = read_images(args.gallery, image_columns(args), "--gallery", check_files=check_files)
    queries = read_images(args.query, image_columns(args), "--query", check_files=check_files)
    _check_n_neighbors(args.n_neighbors, len(gallery.paths), args.gallery)
    if args.plot is not None:
        check_plot_path(args.plot)
    clf = load_on_device(args)
    check_writable(args.output, "--output")
    print(f"Embedding the {len(gallery.paths)} gallery images of {args.gallery}", flush=True)
    left_out = {}
    with reading(gallery, left_out):
        neighbors = ImageNeighbors(classifier=clf, on_error=args.on_error).fit(gallery.paths)
    report_unreadable(left_out, "they are left out of the gallery")
    _check_n_neighbors(args.n_neighbors, neighbors.n_samples_fit_, args.gallery)
    distances, indices, proba, unreadable = _search(neighbors, queries, args.n_neighbors, args)
    report_unreadable(unreadable, "their queries have no matches in the output")
    readable = indices[:, 0] >= 0
    n_queries, k = int(readable.sum()), indices.shape[1]
    # A pairs table, as dedup writes and fit, evaluate and predict read: Image1 is the query.
    table = pd.DataFrame({
        "Image1": np.repeat(queries.paths[readable], k),
        "Image2": neighbors.gallery_[indices[readable].ravel()],
        "rank": np.tile(np.arange(1, k + 1), n_queries),
        "probability": proba[readable].ravel(),
        "distance": distances[readable].ravel(),
    })
    if args.min_proba is not None:
        table = table[table["probability"] >= args.min_proba]
    path = write_atomically(args.output, lambda partial: table.to_csv(partial, index=False))
    n_matches = int((proba[readable] > neighbors.match_threshold_).sum())
    dropped = ("" if args.min_proba is None else
               f"; {n_queries * k - len(table)} below --min-proba {args.min_proba:g} left out")
    print(f"Wrote the {k} nearest gallery images of {n_queries} queries to {path} "
          f"({n_matches} above the model's threshold {neighbors.match_threshold_:g}{dropped})")
    if args.report is not None:
        report_search(args, table, queries.paths[readable], neighbors.match_threshold_)
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
