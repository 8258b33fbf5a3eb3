"""The ``index`` subcommand: a catalogue embedded once and saved as a search that grows.

Here too are the two ways ``search`` and ``dedup`` get their search: built now from images
(:func:`build_search`), or opened from a file that ``index`` wrote (:func:`open_index`).
Images are embedded a chunk at a time under a progress bar, or on a Dask cluster
(``--dask``), and the search is built from their vectors
(``ImageNeighbors.fit(paths, embeddings=...)``).
"""

import math
import os

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from sklearn_imgpair._cli.commands import (
    CHUNK_SIZE,
    check_writable,
    embed_images,
    image_columns,
    progress,
    verbosity,
)
from sklearn_imgpair._cli.inputs import CommandError, read_images, report_unreadable
from sklearn_imgpair._cli.networks import (
    check_device_option,
    check_same_network,
    open_network,
    set_runtime,
)
from sklearn_imgpair._optional import import_optional

__all__ = ["build_search", "open_index", "run_index"]


def _embed_on_dask(embedder, images, args):
    """The vectors of ``images.paths``, embedded on the cluster at ``--dask``, in order."""
    from sklearn_imgpair import embed_dask

    try:
        dd = import_optional("dask.dataframe", "--dask")
        distributed = import_optional("distributed", "--dask")
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    try:
        client = distributed.Client(args.dask, timeout=10)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--dask {args.dask!r}: no Dask scheduler answers there "
                           f"({exc}).") from None
    n_partitions = max(1, math.ceil(len(images.paths) / CHUNK_SIZE))
    paths = dd.from_pandas(pd.Series(images.paths, dtype=object), npartitions=n_partitions)
    with client:
        parts = client.compute(embed_dask(embedder, paths, client=client).to_delayed())
        with progress(len(images.paths), "Embedding on Dask", unit="image", args=args) as bar:
            try:
                for part in distributed.as_completed(parts):
                    bar.update(len(part.result()))
            except (ValueError, OSError) as exc:  # an image the workers cannot read
                raise CommandError(f"--dask: {exc}") from None
        return np.concatenate([part.result().to_numpy(dtype=np.float32) for part in parts])


def _readable_vectors(embedder, images, args, outcome):
    """The readable paths of ``images`` and their vectors (locally, or on Dask).

    Unreadable images (``--on-error warn``) are left out and listed on stderr.
    """
    if getattr(args, "dask", None):
        vectors = _embed_on_dask(embedder, images, args)
        unreadable = {index: f"{images.where(index)}: image {images.paths[index]!r}"
                      for index in np.flatnonzero(np.isnan(vectors).any(axis=1))}
    else:
        vectors, unreadable = embed_images(embedder, images, args)
    report_unreadable(unreadable, outcome)
    readable = ~np.isnan(vectors).any(axis=1)
    return images.paths[readable], vectors[readable]


def build_search(network, images, args, *, algorithm="brute", faiss_index="flat",
                 outcome="they are left out"):
    """A fitted ``ImageNeighbors`` over ``images``, each image embedded once by ``network``.

    ``network`` comes from :func:`open_network`; ``outcome`` says what happens
    to unreadable images (``--on-error warn``).
    """
    from sklearn_imgpair import ImageNeighbors

    paths, vectors = _readable_vectors(network.embedder, images, args, outcome)
    if not len(paths):
        raise CommandError(f"no image of {images.option} {images.source!r} could be read.")
    # verbose: the bars of the search itself (dedup's self-search); the images were embedded
    # under the command's own bar above.
    params = dict(algorithm=algorithm, faiss_index=faiss_index, on_error=args.on_error,
                  verbose=verbosity(args))
    if network.classifier is not None:
        search = ImageNeighbors(classifier=network.classifier, **params)
    else:
        search = ImageNeighbors(network.embedder, **params)
    try:
        return search.fit(paths, embeddings=vectors)
    except ImportError as exc:  # FAISS
        raise CommandError(str(exc)) from None


def open_index(path, args, option="--index"):
    """The search saved at ``path``, with the options' runtime, checked against the network.

    ``--model`` or ``--backbone``, when given, must be the network the file
    holds (see :func:`check_same_network`).
    """
    from sklearn_imgpair import ImageNeighbors

    check_device_option(args.device)
    if not os.path.isfile(path):
        raise CommandError(f"{option} {path!r} does not exist; build it with "
                           "'sklearn-imgpair index'.")
    try:
        search = ImageNeighbors.load(path, device=args.device)
    except ValueError as exc:
        raise CommandError(f"{option} {path!r} is not a search file written by "
                           f"'sklearn-imgpair index': {exc}") from None
    # The options' error policy and progress bars, not those the file was saved with.
    search.set_params(on_error=args.on_error, verbose=verbosity(args))
    search.embedder_.set_params(on_error=args.on_error, verbose=verbosity(args))
    check_same_network(search, open_network(args, report=False), path, option)
    return set_runtime(search, args)


def _algorithm(args):
    """``--algorithm`` and ``--faiss-index``; ``--faiss-index`` alone means FAISS."""
    algorithm = args.algorithm or ("faiss" if args.faiss_index else "brute")
    if algorithm == "brute" and args.faiss_index:
        raise CommandError(f"--faiss-index {args.faiss_index} goes with --algorithm faiss.")
    return algorithm, args.faiss_index or "flat"


def _append(search, images, args):
    """Add to ``search`` the images it does not hold unchanged; print what was done.

    An image whose content key (absolute path, size, modification time) is a
    gallery row's is skipped; one whose path is in the gallery with another key
    (changed since) is embedded again: its old row is removed and the new one
    added at the end. A file that does not exist anymore (``--on-error warn``)
    is neither: its row, if any, stays, and it is named on stderr. Returns
    whether the search changed.
    """
    unchanged = search.gallery_rows(images.paths, match="content") >= 0
    indexed = search.gallery_rows(images.paths, match="path")
    present = np.array([os.path.isfile(path) for path in images.paths], dtype=bool)
    gone = ~unchanged & ~present
    report_unreadable({index: f"{images.where(index)}: image {images.paths[index]!r}"
                       for index in np.flatnonzero(gone)},
                      "they are not embedded, and those in the index keep their rows")
    new = np.flatnonzero(~unchanged & present)
    stale = np.unique(indexed[new][indexed[new] >= 0])
    if not len(new):
        existing = " that still exist" if gone.any() else ""
        print(f"All {int(present.sum())} images of {args.images}{existing} are in the index "
              "already, unchanged: nothing to embed, nothing written.")
        return False
    added = Bunch(paths=images.paths[new], source=images.source, option=images.option,
                  where=lambda index: images.where(new[index]))
    paths, vectors = _readable_vectors(search.embedder_, added, args,
                                       "they are left out of the index")
    if len(paths):
        search.partial_fit(paths, embeddings=vectors)
    if len(stale):  # their rows come before the new ones, which keep their own
        search.remove(indices=stale)
    moved = (" Their old rows were removed, their new ones added at the end." if len(stale)
             else "")
    print(f"Embedded {len(paths)} images ({len(stale)} of them changed since they were "
          f"indexed) and reused {int(unchanged.sum())} already in the index, unchanged.{moved}")
    return bool(len(paths) or len(stale))


def run_index(args):
    """``index``: embed images and save the search, or add them to a saved one."""
    images = read_images(args.images, image_columns(args), "--images",
                         check_files=args.on_error == "raise")
    check_writable(args.output, "--output")
    saved_device = None
    if args.dask and args.device is None:
        # The workers' device (most clusters have no GPU); the file keeps the default, auto.
        args.device, saved_device = "cpu", "auto"
    if args.append:
        if not os.path.isfile(args.output):
            raise CommandError(f"--append: --output {args.output!r} does not exist; build "
                               "the index first, without --append.")
        search = open_index(args.output, args, "--output")
        wanted = (args.algorithm, args.faiss_index)
        saved = (search.algorithm, search.faiss_index)
        if any(value is not None and value != kept for value, kept in zip(wanted, saved)):
            kind = "brute" if search.algorithm == "brute" else f"faiss {search.faiss_index}"
            raise CommandError(f"--append: {args.output!r} is a {kind} index; leave out "
                               "--algorithm and --faiss-index, or build a new one.")
        if not _append(search, images, args):
            return 0
    else:
        network = open_network(args)
        if network is None:
            raise CommandError("index needs the network that embeds the images: --model PATH "
                               "or --backbone NAME (or --append to add to an index).")
        algorithm, faiss_index = _algorithm(args)
        print(f"Embedding the {len(images.paths)} images of {args.images} with "
              f"{network.name}", flush=True)
        search = build_search(network, images, args, algorithm=algorithm,
                              faiss_index=faiss_index, outcome="they are left out of the index")
    if saved_device is not None:
        search.embedder_.set_params(device=saved_device)  # where a later run loads it
    # The command line's bars are not the file's: it loads quiet, as an estimator is built.
    search.set_params(verbose=0)
    search.embedder_.set_params(verbose=0)
    path = search.save(args.output)
    print(f"Saved the index of {search.n_samples_fit_} images to {path}")
    return 0
