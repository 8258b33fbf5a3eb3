"""What each ``sklearn-imgpair`` subcommand does, given its parsed arguments."""

import contextlib
import os
import re
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.utils import Bunch

from tqdm import tqdm

from sklearn_imgpair._cli.evaluation import (
    PLOT_SUFFIXES,
    best_accuracy_threshold,
    plot_curves,
    require_matplotlib,
)
from sklearn_imgpair._images.unreadable import UnreadableImageWarning
from sklearn_imgpair._images.validation import check_files_exist
from sklearn_imgpair._io.atomic import write_atomically
from sklearn_imgpair.datasets import make_image_pairs, read_pairs_csv
from sklearn_imgpair.datasets._pairs_csv import check_columns, csv_location

__all__ = ["CommandError", "run_demo", "run_embed", "run_evaluate", "run_fit", "run_predict"]

# A small Swin that trains from random weights in minutes on two CPU cores.
DEMO_SWIN = dict(patch_size=4, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4))
# Pairs (or images) predicted per step of a progress bar.
_CHUNK_SIZE = 512
# How the library names a cell of its input in error messages: X[row, column] or X[row].
_LIBRARY_CELL = re.compile(r"X\[(\d+)(?:, (\d+))?\]")


class CommandError(Exception):
    """Bad input to a subcommand; the command line prints the message, no traceback."""


# ----------------------------------------------------------------------
# input and output
# ----------------------------------------------------------------------


def _in_csv_terms(error, path, locate):
    """Rewrite the library's ``X[...]`` cells in an error message as CSV line and column.

    ``locate(index, column_index)`` maps the numbers of one ``X[...]`` (the
    second is None for ``X[i]``) to the data row and column name in the CSV.
    """
    def replace(match):
        row, column = locate(int(match[1]), None if match[2] is None else int(match[2]))
        return csv_location(path, row, column)

    return CommandError(_LIBRARY_CELL.sub(replace, str(error)))


def _pair_cells(columns, offset=0):
    """``locate`` for pairs whose first row is data row ``offset`` of the CSV."""
    return lambda row, column: (offset + row, columns[column])


def _read_pairs(path, image_columns, other_columns=(), on_error="raise"):
    """Read a pairs CSV and check its columns and, unless ``on_error="warn"``, its images.

    With ``on_error="warn"`` missing images are left to the estimator, which
    lists them instead of failing.
    """
    frame = read_pairs_csv(path, image_columns=list(dict.fromkeys(image_columns)))
    check_columns(frame, other_columns, path)
    if on_error == "warn":
        return frame
    try:
        check_files_exist(frame[list(image_columns)].to_numpy(dtype=object))
    except (FileNotFoundError, ValueError) as exc:
        raise _in_csv_terms(exc, path, _pair_cells(image_columns)) from None
    return frame


def _check_writable(path, option):
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
    _check_writable(path, "--plot")


def load_model(path, on_error="raise", device=None):
    """Load a classifier written by ``fit`` (no pickle, no code run), with one-line errors.

    ``device`` None keeps the saved device (the CPU where that is missing).
    """
    from sklearn_imgpair import ImagePairClassifier

    try:
        clf = ImagePairClassifier.load(path, device=device)
    except FileNotFoundError:
        raise CommandError(f"model file {path!r} does not exist.") from None
    except ValueError as exc:
        raise CommandError(f"{exc} Give a model file written by 'sklearn-imgpair fit'.") from None
    return clf.set_params(on_error=on_error)


@contextlib.contextmanager
def _unreadable_images(found, path, locate):
    """Collect the failures of the block's :class:`UnreadableImageWarning` into ``found``.

    Failures are stored in CSV terms, keyed by image and reason (so an image
    met again in a later chunk counts once); other warnings pass through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreadableImageWarning)
        yield
    collect_unreadable(caught, found, lambda failure: str(_in_csv_terms(failure, path, locate)))


def collect_unreadable(caught, found, describe):
    """Store the failures of the caught :class:`UnreadableImageWarning` in ``found``.

    Keyed by image and reason, so an image met again in a later chunk counts
    once; ``describe(failure)`` words each in the input's terms. Other caught
    warnings are shown again.
    """
    for warning in caught:
        if not issubclass(warning.category, UnreadableImageWarning):
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
            continue
        for failure in warning.message.failures:
            found.setdefault(_LIBRARY_CELL.sub("", failure, count=1), describe(failure))


def _report_unreadable(found, outcome):
    """Print one warning line on stderr for the unreadable images in ``found``."""
    if not found:
        return
    failures = list(found.values())
    more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
    print(f"sklearn-imgpair: warning: {len(failures)} image(s) could not be read, so "
          f"{outcome}: {'; '.join(failures[:10])}{more}", file=sys.stderr)


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


def _set_batch_size(clf, batch_size):
    """Apply a ``--batch-size`` option to a loaded model; None keeps the model's."""
    if batch_size is not None:
        clf.set_params(batch_size=batch_size)
    return clf


def _predict_pairs(clf, X, path, columns, threshold, args):
    """Probabilities and predictions for every pair, in chunks under a progress bar.

    Returns a Bunch with ``proba`` (one column per label, in ``clf.classes_``
    order), ``match`` (the match probability), ``predicted`` (labels) and
    ``threshold`` (``threshold``, or the model's if None).
    """
    match_column = list(clf.classes_).index(clf.match_label)
    chunks, unreadable = [], {}
    with _progress(len(X), "Predicting", unit="pair", args=args) as bar:
        for start in range(0, len(X), _CHUNK_SIZE):
            chunk = X[start:start + _CHUNK_SIZE]
            locate = _pair_cells(columns, start)
            try:
                with _unreadable_images(unreadable, path, locate):
                    chunks.append(clf.predict_proba(chunk))
            except (ValueError, FileNotFoundError) as exc:
                raise _in_csv_terms(exc, path, locate) from None
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


def _progress(total, desc, *, unit, args):
    """A tqdm bar on stderr: off with ``-q``, on with ``-v``, else only on a terminal."""
    disable = True if args.quiet else (False if args.verbose else None)
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr)


# ----------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------


def run_fit(args):
    """``fit``: train a matcher on a pairs CSV and save it."""
    from sklearn_imgpair import ImagePairClassifier

    columns = [args.image1, args.image2]
    frame = _read_pairs(args.train, columns, [args.label], on_error=args.on_error)
    _check_labels(frame[args.label], args.train, args.label)
    match_label = _parse_match_label(args.match_label, frame[args.label], args.train,
                                     args.label)
    _check_writable(args.model, "--model")
    clf = ImagePairClassifier(
        args.model_name, pretrained=args.pretrained, weights_path=args.weights_path,
        model_kwargs=args.model_kwargs, image_size=args.image_size, match_label=match_label,
        time_limit=args.time_limit, max_epochs=args.max_epochs, batch_size=args.batch_size,
        lr=args.lr, pair_mining=args.pair_mining, random_state=args.seed,
        on_error=args.on_error, verbose=0 if args.quiet else 1 + args.verbose,
        # Only when asked for: a model without colour keeps the parameters it had.
        **({"module__colour_share": args.colour_share} if args.colour_share else {}),
    )
    print(f"Fitting {args.model_name} on {len(frame)} pairs from {args.train}", flush=True)
    started = time.perf_counter()
    unreadable = {}
    try:
        with _unreadable_images(unreadable, args.train, _pair_cells(columns)):
            # By position: the columns the command names are the pair, whatever their names.
            clf.fit(frame[columns].to_numpy(dtype=object), frame[args.label])
    except (ValueError, FileNotFoundError) as exc:
        raise _in_csv_terms(exc, args.train, _pair_cells(columns)) from None
    except OSError as exc:  # pretrained weights out of reach
        raise CommandError(f"{exc} On the command line: --weights-path PATH or "
                           "--no-pretrained.") from None
    _report_unreadable(unreadable, "their pairs were left out of training")
    print(f"Fitted in {time.perf_counter() - started:.1f} s ({len(clf.history)} epochs).")
    print(f"Saved the model to {clf.save(args.model)}")
    return 0


def run_evaluate(args):
    """``evaluate``: ROC AUC and accuracy of a saved model on a labelled pairs CSV."""
    columns = [args.image1, args.image2]
    frame = _read_pairs(args.data, columns, [args.label], on_error=args.on_error)
    clf = _set_batch_size(load_model(args.model, args.on_error), args.batch_size)
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
    _report_unreadable(result.unreadable, f"{n_unreadable} pairs are left out of the "
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
    frame = _read_pairs(args.data, columns, on_error=args.on_error)
    clf = _set_batch_size(load_model(args.model, args.on_error), args.batch_size)
    _check_writable(args.output, "--output")
    result = _predict_pairs(clf, frame[columns].to_numpy(dtype=object), args.data, columns,
                            args.threshold, args)
    _report_unreadable(result.unreadable, f"{int((~result.readable).sum())} pairs get an "
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


def _distinct_images(frame, columns):
    """Distinct images of ``columns``, column by column in first-seen order.

    Returns the images and, for each, the (data row, column) of its first cell.
    """
    cells = frame[columns].to_numpy(dtype=object).ravel(order="F")
    images, first = np.unique(cells, return_index=True)
    order = np.argsort(first)
    column_indices, rows = np.divmod(first[order], len(frame))
    return images[order], [(int(row), columns[int(column)])
                           for row, column in zip(rows, column_indices)]


def run_embed(args):
    """``embed``: write the embedding of every distinct image of a pairs CSV."""
    from sklearn_imgpair import ImageEmbedder

    if os.path.splitext(args.output)[1].lower() not in (".npy", ".csv"):
        raise CommandError(f"--output must end in .npy or .csv; got {args.output!r}.")
    frame = _read_pairs(args.data, [args.image1, args.image2], on_error=args.on_error)
    images, cells = _distinct_images(frame, list(dict.fromkeys([args.image1, args.image2])))
    clf = _set_batch_size(load_model(args.model), args.batch_size)
    _check_writable(args.output, "--output")
    embedder = ImageEmbedder(classifier=clf, batch_size=clf.batch_size,
                             on_error=args.on_error).fit()
    chunks, unreadable = [], {}
    with _progress(len(images), "Embedding", unit="image", args=args) as bar:
        for start in range(0, len(images), _CHUNK_SIZE):
            locate = lambda index, _, start=start: cells[start + index]  # noqa: E731
            try:
                with _unreadable_images(unreadable, args.data, locate):
                    chunks.append(embedder.transform(images[start:start + _CHUNK_SIZE]))
            except (ValueError, FileNotFoundError) as exc:
                raise _in_csv_terms(exc, args.data, locate) from None
            bar.update(len(chunks[-1]))
    vectors = np.concatenate(chunks)
    _report_unreadable(unreadable, "their vectors are NaN")
    path, paths_file = _write_embeddings(args.output, images, vectors)
    also = f" and their paths to {paths_file}" if paths_file else ""
    print(f"Wrote {vectors.shape[0]} embeddings of length {vectors.shape[1]} to {path}{also}")
    return 0


def run_demo(args):
    """``demo``: synthetic data, a small Swin from scratch, evaluation, a saved model."""
    from sklearn_imgpair import ImageEmbedder, ImagePairClassifier

    output = os.path.abspath(args.output or tempfile.mkdtemp(prefix="sklearn-imgpair-demo-"))
    image_dir = os.path.join(output, "images")
    print(f"1. Drawing a synthetic product-matching data set into {image_dir}")
    train, test = make_image_pairs(image_dir, n_products=32, n_views=6, image_size=64,
                                   n_pairs=800, random_state=args.seed)
    print(f"   {len(train)} training pairs, {len(test)} test pairs of unseen products "
          f"({int(test['Label'].sum())} matching).")

    print(f"2. Fitting a Siamese Swin from random weights (time_limit={args.time_limit:g} s)")
    clf = ImagePairClassifier(
        pretrained=False, model_kwargs=DEMO_SWIN, image_size=64, lr=2e-3, batch_size=32,
        max_epochs=100, time_limit=args.time_limit, random_state=args.seed, verbose=1,
        callbacks__early_stopping__patience=20,  # the learning rate decays over the budget
    )
    started = time.perf_counter()
    clf.fit(train[["Image1", "Image2"]], train["Label"])
    print(f"   fitted in {time.perf_counter() - started:.1f} s, {len(clf.history)} epochs")

    X_test, y_test = test[["Image1", "Image2"]], test["Label"].to_numpy()
    proba = clf.predict_proba(X_test)[:, 1]
    predictions = clf.predict(X_test)
    print("3. Evaluating on the test pairs")
    print(f"   ROC AUC  {clf.score(X_test, y_test):.4f}  (clf.score)")
    print(f"   accuracy {(predictions == y_test).mean():.4f}  (clf.predict, threshold 0.5)")
    print("   first pairs:  label  predicted  P(match)")
    for index in range(5):
        print(f"      pair {index}:     {y_test[index]}        {predictions[index]}      "
              f"{proba[index]:.3f}")
    embeddings = ImageEmbedder(classifier=clf).fit().transform(test["Image1"])
    print(f"   embeddings of the test pairs' first images: shape {embeddings.shape}  "
          "(ImageEmbedder(classifier=clf))")

    model_path = clf.save(os.path.join(output, "model.safetensors"))
    print(f"4. Saved the fitted classifier to {model_path}")
    print(f"   reload it with: ImagePairClassifier.load({model_path!r})")
    print(f"   or use it from the shell: sklearn-imgpair predict --model {model_path} "
          "--data pairs.csv --output predictions.csv")
    return 0
