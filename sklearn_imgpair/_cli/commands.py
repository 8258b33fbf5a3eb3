"""The ``fit``, ``evaluate``, ``predict`` and ``embed`` subcommands, and the checks all share."""

import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.utils import Bunch

from sklearn_imgpair._cli.evaluation import (
    PLOT_SUFFIXES,
    best_accuracy_threshold,
    plot_curves,
    require_matplotlib,
)
from sklearn_imgpair._cli.inputs import (
    CommandError,
    in_csv_terms,
    pair_cells,
    read_images,
    read_pairs,
    reading,
    report_unreadable,
    unreadable_images,
)
from sklearn_imgpair._cli.networks import (
    check_device_option,
    check_precision_option,
    load_classifier,
    open_network,
)
from sklearn_imgpair._images.progress import progress_bar
from sklearn_imgpair._io.atomic import write_atomically
from sklearn_imgpair.datasets._pairs_csv import csv_location

__all__ = ["CHUNK_SIZE", "check_plot_path", "check_writable", "embed_images", "image_columns",
           "progress", "run_embed", "run_evaluate", "run_fit", "run_predict", "verbosity"]

# Pairs (or images) predicted per step of a progress bar.
CHUNK_SIZE = 512


# ----------------------------------------------------------------------
# input and output
# ----------------------------------------------------------------------


def check_writable(path, option):
    """Fail before any work unless a file can be written at ``path``."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise CommandError(f"{option} {path!r} is a folder; give a file name.")
    existing = os.path.dirname(path)
    while not os.path.exists(existing):  # makedirs will create the rest
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise CommandError(f"{option} {path!r} cannot be written: {existing!r} is a file, "
                           "not a folder.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise CommandError(f"{option} {path!r} cannot be written: no file can be created "
                           f"in {existing!r} ({exc.strerror or exc}).") from None


def _check_plot(path, labels, data):
    """Fail before any work unless ``--plot`` can draw ``labels`` and write ``path``."""
    if len(set(labels)) < 2:
        raise CommandError(f"--plot needs pairs of both labels (match and non-match); the "
                           f"evaluated pairs of {data} hold one only.")
    check_plot_path(path)


def check_plot_path(path):
    """Fail before any work unless matplotlib can write a picture to ``path`` (``--plot``)."""
    if os.path.splitext(path)[1].lower() not in PLOT_SUFFIXES:
        raise CommandError(f"--plot must end in {', '.join(PLOT_SUFFIXES[:-1])} or "
                           f"{PLOT_SUFFIXES[-1]}; got {path!r}.")
    try:
        require_matplotlib()
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    check_writable(path, "--plot")


def _check_labels(labels, path, column):
    """Fail unless ``labels`` holds two distinct values and none is missing."""
    missing = np.flatnonzero(labels.isna().to_numpy())
    if len(missing):
        raise CommandError(f"{csv_location(path, int(missing[0]), column)}: the label is "
                           f"missing ({len(missing)} rows lack one); every pair needs a label.")
    known = sorted(str(label) for label in pd.unique(labels))
    if len(known) != 2:
        raise CommandError(f"{path}, column {column!r} must hold two labels (match and "
                           f"non-match); got {len(known)}: {known[:10]}.")


def _parse_match_label(text, labels, path, column):
    """The label of ``labels`` whose text is ``text`` (CSV labels come typed by pandas)."""
    known = pd.unique(labels.dropna())
    for label in known:
        if str(label) == text or (isinstance(label, (bool, np.bool_))
                                  and str(label).lower() == text.lower()):
            return label.item() if isinstance(label, np.generic) else label
    raise CommandError(f"--match-label {text!r} is not one of the labels in {path}, column "
                       f"{column!r}: {sorted(str(label) for label in known)}.")


def _predict_pairs(clf, X, path, columns, threshold, args):
    """Probabilities and predictions for every pair, in chunks under a progress bar.

    Returns a Bunch with ``proba`` (one column per label, in ``clf.classes_``
    order), ``match`` (the match probability), ``predicted`` (labels) and
    ``threshold`` (``threshold``, or the model's if None).
    """
    match_column = list(clf.classes_).index(clf.match_label)
    chunks, unreadable = [], {}
    with progress(len(X), "Predicting", unit="pair", args=args) as bar:
        for start in range(0, len(X), CHUNK_SIZE):
            chunk = X[start:start + CHUNK_SIZE]
            locate = pair_cells(columns, start)
            try:
                with unreadable_images(unreadable, path, locate):
                    chunks.append(clf.predict_proba(chunk))
            except (ValueError, FileNotFoundError) as exc:
                raise in_csv_terms(exc, path, locate) from None
            bar.update(len(chunk))
    proba = np.concatenate(chunks)
    match = proba[:, match_column]
    threshold = clf.threshold if threshold is None else threshold
    predicted = np.where(match > threshold, clf.classes_[match_column],
                         clf.classes_[1 - match_column])
    readable = ~np.isnan(match)
    if not readable.all():
        predicted = predicted.astype(object)
        predicted[~readable] = None
    return Bunch(proba=proba, match=match, predicted=predicted, threshold=threshold,
                 readable=readable, unreadable=unreadable)


def progress(total, desc, *, unit, args):
    """A tqdm bar on stderr: off with ``-q``, on with ``-v``, else only on a terminal."""
    return progress_bar(total, desc, verbosity(args), unit=unit)


def verbosity(args):
    """The ``verbose`` of an estimator whose bars follow the rule of :func:`progress`."""
    if args.quiet:
        return 0
    return 1 if args.verbose or sys.stderr.isatty() else 0


# ----------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------


def run_fit(args):
    """``fit``: train a matcher on a pairs CSV and save it."""
    from sklearn_imgpair import ImagePairClassifier

    columns = [args.image1, args.image2]
    frame = read_pairs(args.train, columns, [args.label], on_error=args.on_error)
    _check_labels(frame[args.label], args.train, args.label)
    match_label = _parse_match_label(args.match_label, frame[args.label], args.train,
                                     args.label)
    check_writable(args.model, "--model")
    device = "auto" if args.device is None else args.device
    check_device_option(device)
    check_precision_option(args.precision, device)
    clf = ImagePairClassifier(
        args.model_name, pretrained=args.pretrained, weights_path=args.weights_path,
        model_kwargs=args.model_kwargs, image_size=args.image_size, match_label=match_label,
        time_limit=args.time_limit, max_epochs=args.max_epochs, batch_size=args.batch_size,
        lr=args.lr, pair_mining=args.pair_mining, random_state=args.random_state,
        on_error=args.on_error, verbose=0 if args.quiet else 1 + args.verbose,
        device=device, precision="auto" if args.precision is None else args.precision,
        # Only when asked for: a model without colour keeps the parameters it had.
        **({"module__colour_share": args.colour_share} if args.colour_share else {}),
    )
    print(f"Fitting {args.model_name} on {len(frame)} pairs from {args.train}", flush=True)
    started = time.perf_counter()
    unreadable = {}
    try:
        with unreadable_images(unreadable, args.train, pair_cells(columns)):
            # By position: the columns the command names are the pair, whatever their names.
            clf.fit(frame[columns].to_numpy(dtype=object), frame[args.label])
    except (ValueError, FileNotFoundError) as exc:
        raise in_csv_terms(exc, args.train, pair_cells(columns)) from None
    except OSError as exc:  # pretrained weights out of reach
        raise CommandError(f"{exc} On the command line: --weights-path PATH or "
                           "--no-pretrained.") from None
    report_unreadable(unreadable, "their pairs were left out of training")
    print(f"Fitted in {time.perf_counter() - started:.1f} s ({len(clf.history)} epochs).")
    print(f"Saved the model to {clf.save(args.model)}")
    return 0


def run_evaluate(args):
    """``evaluate``: ROC AUC and accuracy of a saved model on a labelled pairs CSV."""
    columns = [args.image1, args.image2]
    frame = read_pairs(args.data, columns, [args.label], on_error=args.on_error)
    clf = load_classifier(args)
    y = frame[args.label].astype(str).to_numpy()
    classes = [str(label) for label in clf.classes_]
    unknown = sorted(set(y) - set(classes))
    if unknown:
        raise CommandError(f"{args.data}, column {args.label!r} holds labels {unknown} that "
                           f"the model does not know (its labels: {classes}).")
    if args.plot is not None:
        _check_plot(args.plot, y, args.data)
    result = _predict_pairs(clf, frame[columns].to_numpy(dtype=object), args.data, columns,
                            args.threshold, args)
    n_unreadable = int((~result.readable).sum())
    report_unreadable(result.unreadable, f"{n_unreadable} pairs are left out of the "
                                          "evaluation")
    y, match = y[result.readable], result.match[result.readable]
    is_match = y == str(clf.match_label)
    accuracy = np.mean(result.predicted[result.readable].astype(str) == y)
    left_out = f", {n_unreadable} unreadable left out" if n_unreadable else ""
    print(f"pairs     {len(y)} ({int(is_match.sum())} matching{left_out})")
    if 0 < is_match.sum() < len(is_match):
        print(f"ROC AUC   {roc_auc_score(is_match, match):.4f}")
    else:
        print("ROC AUC   undefined: the data hold one label only")
    print(f"accuracy  {accuracy:.4f} at threshold {result.threshold:g}")
    if len(y):
        threshold, best = best_accuracy_threshold(is_match, match)
        print(f"best      {best:.4f} at threshold "
              f"{np.format_float_positional(threshold, trim='-')}, the most accurate on these "
              "pairs (ties: the highest)")
    if args.plot is not None:
        _check_plot(args.plot, y, args.data)  # unreadable images may have left one label
        path = plot_curves(args.plot, y, match, pos_label=str(clf.match_label),
                           name=os.path.basename(args.model),
                           title=f"{os.path.basename(args.data)}: {len(y)} pairs")
        print(f"Wrote the ROC and precision-recall curves to {path}")
    return 0


def run_predict(args):
    """``predict``: write predictions and match probabilities for a pairs CSV."""
    columns = [args.image1, args.image2]
    frame = read_pairs(args.data, columns, on_error=args.on_error)
    clf = load_classifier(args)
    check_writable(args.output, "--output")
    result = _predict_pairs(clf, frame[columns].to_numpy(dtype=object), args.data, columns,
                            args.threshold, args)
    report_unreadable(result.unreadable, f"{int((~result.readable).sum())} pairs get an "
                                          "empty prediction and probability")
    output = frame.copy()
    output["prediction"] = result.predicted
    output["probability"] = result.match
    if args.proba:
        for index, label in enumerate(clf.classes_):
            output[f"proba_{label}"] = result.proba[:, index]
    path = write_atomically(args.output, lambda partial: output.to_csv(partial, index=False))
    n_matches = int((result.match > result.threshold).sum())
    print(f"Wrote {len(output)} predictions ({n_matches} matches at threshold "
          f"{result.threshold:g}) to {path}")
    return 0


def _write_embeddings(path, images, vectors):
    extension = os.path.splitext(path)[1].lower()
    if extension == ".npy":
        def write(partial):
            with open(partial, "wb") as file:
                np.save(file, vectors)

        paths_file = os.path.splitext(path)[0] + ".paths.txt"
        write_atomically(paths_file, lambda partial: _write_lines(partial, images))
        return write_atomically(path, write), paths_file
    table = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])
    table.insert(0, "path", images)
    return write_atomically(path, lambda partial: table.to_csv(partial, index=False)), None


def _write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(f"{line}\n" for line in lines)


def embed_images(embedder, images, args, *, desc="Embedding"):
    """The vectors of ``images.paths``, a chunk at a time under a progress bar.

    Returns
    -------
    vectors : ndarray of shape (n_images, dim), dtype=float32
        NaN rows for unreadable images (``--on-error warn``).
    unreadable : dict
        Their failures, in the input's terms (see ``reading``).
    """
    chunks, unreadable = [], {}
    with progress(len(images.paths), desc, unit="image", args=args) as bar:
        for start in range(0, len(images.paths), CHUNK_SIZE):
            with reading(images, unreadable, offset=start):
                chunks.append(embedder.transform(images.paths[start:start + CHUNK_SIZE]))
            bar.update(len(chunks[-1]))
    if not chunks:
        return np.empty((0, embedder.embedding_dim_), dtype=np.float32), unreadable
    return np.concatenate(chunks), unreadable


def image_columns(args):
    """The CSV image columns of ``--image-column``: that column twice, or None (the default)."""
    return None if args.image_column is None else (args.image_column, args.image_column)


def _embed_columns(args):
    """``image_columns``, or the pair of the deprecated ``embed --image1``/``--image2``."""
    old = [getattr(args, name, None) for name in ("image1", "image2")]
    if old == [None, None]:
        return image_columns(args)
    if args.image_column is not None:
        raise CommandError("give --image-column, or the deprecated --image1 and --image2, "
                           "not both.")
    return old[0] or "Image1", old[1] or "Image2"


def run_embed(args):
    """``embed``: write the embedding of every distinct image of a CSV file or a folder."""
    if os.path.splitext(args.output)[1].lower() not in (".npy", ".csv"):
        raise CommandError(f"--output must end in .npy or .csv; got {args.output!r}.")
    images = read_images(args.images, _embed_columns(args), "--images",
                         check_files=args.on_error == "raise")
    embedder = open_network(args).embedder
    check_writable(args.output, "--output")
    vectors, unreadable = embed_images(embedder, images, args)
    report_unreadable(unreadable, "their vectors are NaN")
    path, paths_file = _write_embeddings(args.output, images.paths, vectors)
    also = f" and their paths to {paths_file}" if paths_file else ""
    print(f"Wrote {vectors.shape[0]} embeddings of length {vectors.shape[1]} to {path}{also}")
    return 0
