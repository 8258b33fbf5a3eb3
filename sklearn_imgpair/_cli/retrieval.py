"""The ``search`` subcommand: a catalogue of images searched with a saved matcher."""

import os

import numpy as np
import pandas as pd

from sklearn_imgpair._cli.commands import (
    CHUNK_SIZE,
    check_plot_path,
    check_writable,
    image_columns,
    progress,
)
from sklearn_imgpair._cli.evaluation import require_matplotlib
from sklearn_imgpair._cli.index import build_search, open_index
from sklearn_imgpair._cli.inputs import CommandError, read_images, reading, report_unreadable
from sklearn_imgpair._cli.networks import open_network
from sklearn_imgpair._cli.report import THUMBNAIL_SIZE, check_report_path, report_search, thumbnail
from sklearn_imgpair._duplicates import pair_scores, score_name
from sklearn_imgpair._io.atomic import write_atomically

__all__ = ["plot_search", "run_search"]

# Matches shown per query in a --plot picture, whatever --n-neighbors.
_PLOTTED_MATCHES = 10


# ----------------------------------------------------------------------
# search
# ----------------------------------------------------------------------


def _check_n_neighbors(n_neighbors, n_gallery, gallery):
    if n_neighbors > n_gallery:
        raise CommandError(f"--n-neighbors {n_neighbors} is more than the {n_gallery} images of "
                           f"the gallery {gallery!r}; give --n-neighbors {n_gallery} or less.")


def _search(neighbors, queries, k, args):
    """Distances and gallery rows of each query's k nearest images, under a progress bar."""
    distances, indices, unreadable = [], [], {}
    with progress(len(queries.paths), "Searching", unit="image", args=args) as bar:
        for start in range(0, len(queries.paths), CHUNK_SIZE):
            with reading(queries, unreadable, offset=start):
                chunk_distances, chunk_indices = neighbors.kneighbors(
                    queries.paths[start:start + CHUNK_SIZE], n_neighbors=k)
            distances.append(chunk_distances)
            indices.append(chunk_indices)
            bar.update(len(chunk_indices))
    return np.concatenate(distances), np.concatenate(indices), unreadable


def _minimum_score(has_head, args):
    """The ``--min-proba`` (with the model's head) or ``--min-similarity``, checked."""
    if has_head:
        if args.min_similarity is not None:
            raise CommandError("--min-similarity is for a --backbone, whose matches have a "
                               "cosine similarity; with a --model, use --min-proba.")
        return args.min_proba
    if args.min_proba is not None:
        raise CommandError("--min-proba needs a model's match probability; the matches of a "
                           "--backbone have a cosine similarity: use --min-similarity.")
    return args.min_similarity


def _open_gallery(args):
    """The search of ``--index``, or one built now over ``--gallery``, its name and minimum."""
    if args.index is not None:
        neighbors = open_index(args.index, args)
        minimum = _minimum_score(score_name(neighbors) == "probability", args)
        print(f"Opened {args.index}, an index of {neighbors.n_samples_fit_} images", flush=True)
        return neighbors, args.index, minimum
    check_files = args.on_error == "raise"
    gallery = read_images(args.gallery, image_columns(args), "--gallery", check_files=check_files)
    _check_n_neighbors(args.n_neighbors, len(gallery.paths), args.gallery)
    network = open_network(args)
    if network is None:
        raise CommandError("search --gallery needs the network that embeds the images: "
                           "--model PATH or --backbone NAME.")
    minimum = _minimum_score(network.classifier is not None, args)  # before embedding
    print(f"Embedding the {len(gallery.paths)} gallery images of {args.gallery}", flush=True)
    neighbors = build_search(network, gallery, args, outcome="they are left out of the gallery")
    return neighbors, args.gallery, minimum


def run_search(args):
    """``search``: the ``n_neighbors`` most similar gallery images of each query image."""
    if os.path.splitext(args.output)[1].lower() != ".csv":
        raise CommandError(f"--output must end in .csv; got {args.output!r}.")
    if args.report is not None:
        check_report_path(args.report)
    check_files = args.on_error == "raise"
    queries = read_images(args.query, image_columns(args), "--query", check_files=check_files)
    if args.plot is not None:
        check_plot_path(args.plot)
    check_writable(args.output, "--output")  # before the gallery's embedding
    neighbors, source, minimum = _open_gallery(args)
    # The command's own bar counts the queries: the search's bars would nest inside it.
    neighbors.set_params(verbose=0)
    neighbors.embedder_.set_params(verbose=0)
    _check_n_neighbors(args.n_neighbors, neighbors.n_samples_fit_, source)
    distances, indices, unreadable = _search(neighbors, queries, args.n_neighbors, args)
    report_unreadable(unreadable, "their queries have no matches in the output")
    column, scores = score_name(neighbors), pair_scores(neighbors, distances)
    readable = indices[:, 0] >= 0
    n_queries, k = int(readable.sum()), indices.shape[1]
    # A pairs table, as dedup writes and fit, evaluate and predict read: Image1 is the query.
    table = pd.DataFrame({
        "Image1": np.repeat(queries.paths[readable], k),
        "Image2": neighbors.gallery_[indices[readable].ravel()],
        "rank": np.tile(np.arange(1, k + 1), n_queries),
        column: scores[readable].ravel(),
        "distance": distances[readable].ravel(),
    })
    if minimum is not None:
        table = table[table[column] >= minimum]
    path = write_atomically(args.output, lambda partial: table.to_csv(partial, index=False))
    option = "--min-proba" if column == "probability" else "--min-similarity"
    dropped = ("" if minimum is None else
               f"{n_queries * k - len(table)} below {option} {minimum:g} left out")
    if column == "probability":
        above = int((scores[readable] > neighbors.match_threshold_).sum())
        dropped = "; ".join(filter(None, [f"{above} above the model's threshold "
                                          f"{neighbors.match_threshold_:g}", dropped]))
    print(f"Wrote the {k} nearest gallery images of {n_queries} queries to {path}"
          f"{f' ({dropped})' if dropped else ''}")
    if args.report is not None:
        report_search(args, table, queries.paths[readable], neighbors.match_threshold_, column)
    if args.plot is not None and n_queries:
        shown = np.flatnonzero(readable)[:args.plot_queries]
        network = os.path.basename(args.model or args.backbone or args.index)
        plot_path, missing = plot_search(
            args.plot, queries.paths[shown], neighbors.gallery_[indices[shown]], scores[shown],
            threshold=neighbors.match_threshold_,
            title=f"{network}: nearest images of {source}")
        print(f"Drew {len(shown)} queries and their matches in {plot_path}")
        report_unreadable({image: repr(image) for image in missing},
                          "they are drawn as placeholders in the --plot picture")
    return 0


def _draw(axes, path, missing):
    """The thumbnail of ``path`` in ``axes``, or a named placeholder if it cannot be read."""
    image = thumbnail(path, THUMBNAIL_SIZE)
    if image is not None:
        axes.imshow(np.asarray(image))
        return
    if path not in missing:
        missing.append(path)
    axes.set_facecolor("mistyrose")
    axes.text(0.5, 0.5, f"missing:\n{_short_name(path)}", ha="center", va="center",
              fontsize=7, color="darkred", transform=axes.transAxes)


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
    ``threshold`` and in grey below it; or, without a threshold (a backbone's
    search), with its cosine similarity, in grey. The figure is drawn by
    matplotlib's Agg canvas without pyplot's global state and written
    atomically. An image that cannot be read anymore (moved, deleted,
    corrupt) is drawn as a placeholder that names it.

    Parameters
    ----------
    path : str or path-like
        File to write; its suffix, one of :data:`PLOT_SUFFIXES`, sets the format.
    queries : ndarray of shape (n_queries,)
        Query image paths.
    matches : ndarray of shape (n_queries, n_matches)
        Gallery image paths, nearest first; the first 10 are drawn.
    probabilities : ndarray of shape (n_queries, n_matches)
        Their match probabilities, or cosine similarities.
    threshold : float or None
        Probability above which a match is framed in green; None for
        similarities.
    title : str
        The figure's title.

    Returns
    -------
    path : str
        The absolute path written.
    missing : list of str
        The images that could not be read, drawn as placeholders.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matches = np.asarray(matches)[:, :_PLOTTED_MATCHES]
    letter = "s" if threshold is None else "p"
    n_rows, n_columns = len(queries), 1 + matches.shape[1]
    figure = Figure(figsize=(1.7 * n_columns + 0.3, 2.0 * n_rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    grid = np.atleast_2d(figure.subplots(n_rows, n_columns, squeeze=False))
    missing = []
    for row, query in enumerate(queries):
        axes = grid[row, 0]
        _draw(axes, query, missing)
        axes.set_title("query", fontsize=9, fontweight="bold", color="tab:blue")
        axes.set_xlabel(_short_name(query), fontsize=7)
        _frame(axes, "tab:blue", 3)
        for column, (match, probability) in enumerate(zip(matches[row], probabilities[row]),
                                                      start=1):
            axes = grid[row, column]
            _draw(axes, match, missing)
            above = threshold is not None and probability > threshold
            axes.set_title(f"{column}. {letter} = {probability:.3f}", fontsize=9,
                           color="tab:green" if above else "dimgrey")
            axes.set_xlabel(_short_name(match), fontsize=7)
            _frame(axes, "tab:green" if above else "lightgrey", 3 if above else 1)
    legend = ("s: cosine similarity" if threshold is None else
              f"p: match probability; green: above the threshold {threshold:g}")
    figure.suptitle(f"{title}\n({legend})", fontsize=10)
    file_format = os.path.splitext(path)[1][1:].lower()
    path = write_atomically(path, lambda partial: figure.savefig(partial, format=file_format))
    return path, missing
