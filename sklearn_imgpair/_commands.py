"""What each ``sklearn-imgpair`` subcommand does, given its parsed arguments."""

import os
import pickle
import re
import tempfile
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from sklearn_imgpair._progress import progress_bar
from sklearn_imgpair.datasets import make_image_pairs, read_pairs_csv
from sklearn_imgpair.datasets._csv import IMAGE_SEPARATOR, check_columns

__all__ = ["CommandError", "run_demo", "run_embed", "run_evaluate", "run_fit", "run_predict"]

# A small Swin that trains from random weights in minutes on two CPU cores.
DEMO_SWIN = dict(patch_size=4, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4))
# Pairs per chunk when predicting with a progress bar.
_CHUNK_PAIRS = 512


class CommandError(Exception):
    """Bad input to a subcommand; the command line prints the message, no traceback."""


# ----------------------------------------------------------------------
# input and output
# ----------------------------------------------------------------------


def _read_pairs(path, image_columns, other_columns=()):
    """Read a pairs CSV, check its columns and that every image file exists."""
    frame = read_pairs_csv(path, image_columns=image_columns)
    check_columns(frame, other_columns, path)
    found = {}
    for column in image_columns:
        for row, image in enumerate(frame[column]):
            if found.setdefault(image, os.path.isfile(image)):
                continue
            parts = image.split(IMAGE_SEPARATOR)
            if len(parts) > 1 and all(map(os.path.isfile, parts)):
                problem = ("holds several images joined by ';'; each side of a pair must be "
                           "one image")
            elif os.path.exists(image):
                problem = "is not a file"
            else:
                problem = "does not exist"
            raise CommandError(f"{path}, row {row}, column {column!r}: image {image!r} {problem}.")
    return frame


def _in_csv_terms(error, path, columns, offset=0):
    """Rewrite the library's ``X[row, col]`` in an error message as CSV row and column."""
    def replace(match):
        return f"{path}, row {int(match[1]) + offset}, column {columns[int(match[2])]!r}"

    return CommandError(re.sub(r"X\[(\d+), ([01])\]", replace, str(error)))


def _write_atomically(path, write):
    """Call ``write(temporary_path)``, then move the file to ``path`` in one step."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    os.close(descriptor)
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        os.remove(partial)
        raise
    return path


def save_model(clf, path):
    """Pickle a fitted classifier to ``path``, atomically; return the absolute path."""
    def write(partial):
        with open(partial, "wb") as file:
            pickle.dump(clf, file)

    return _write_atomically(path, write)


def load_model(path):
    """Unpickle a classifier written by ``save_model``, with one-line errors."""
    from sklearn_imgpair import ImagePairClassifier

    try:
        with open(path, "rb") as file:
            clf = pickle.load(file)
    except FileNotFoundError:
        raise CommandError(f"model file {path!r} does not exist.") from None
    except IsADirectoryError:
        raise CommandError(f"model file {path!r} is a folder.") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError,
            TypeError, ValueError) as exc:
        raise CommandError(f"{path!r} is not a model file written by 'sklearn-imgpair fit' "
                           f"({type(exc).__name__}: {exc}).") from None
    if not isinstance(clf, ImagePairClassifier):
        raise CommandError(f"{path!r} holds a {type(clf).__name__}, not a model written by "
                           "'sklearn-imgpair fit'.")
    return clf


def _parse_match_label(text, labels, column):
    """The label of ``labels`` whose text is ``text`` (CSV labels come typed by pandas)."""
    known = pd.unique(labels.dropna())
    for label in known:
        if str(label) == text or (isinstance(label, (bool, np.bool_))
                                  and str(label).lower() == text.lower()):
            return label.item() if isinstance(label, np.generic) else label
    raise CommandError(f"--match-label {text!r} is not one of the labels in column "
                       f"{column!r}: {sorted(str(label) for label in known)}.")


def _match_probabilities(clf, X, path, columns, enabled):
    """P(match) for every pair, in chunks under a progress bar."""
    match_column = int(np.flatnonzero(clf.classes_ == clf.match_label)[0])
    chunks = []
    with progress_bar(len(X), "Predicting", unit="pair", enabled=enabled) as bar:
        for start in range(0, len(X), _CHUNK_PAIRS):
            chunk = X.iloc[start:start + _CHUNK_PAIRS]
            try:
                chunks.append(clf.predict_proba(chunk))
            except (ValueError, FileNotFoundError) as exc:
                raise _in_csv_terms(exc, path, columns, offset=start) from None
            bar.update(len(chunk))
    proba = np.concatenate(chunks)
    return proba, proba[:, match_column]


def _progress_enabled(args):
    return False if args.quiet else (True if args.verbose else None)


# ----------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------


def run_fit(args):
    """``fit``: train a matcher on a pairs CSV and save it."""
    from sklearn_imgpair import ImagePairClassifier

    columns = [args.image1, args.image2]
    frame = _read_pairs(args.train, columns, [args.label])
    match_label = _parse_match_label(args.match_label, frame[args.label], args.label)
    clf = ImagePairClassifier(
        args.model_name, pretrained=args.pretrained, weights_path=args.weights_path,
        model_kwargs=args.model_kwargs, image_size=args.image_size, match_label=match_label,
        time_limit=args.time_limit, max_epochs=args.max_epochs, batch_size=args.batch_size,
        lr=args.lr, random_state=args.seed, verbose=0 if args.quiet else 1 + args.verbose,
    )
    print(f"Fitting {args.model_name} on {len(frame)} pairs from {args.train}", flush=True)
    started = time.perf_counter()
    try:
        clf.fit(frame[columns], frame[args.label])
    except (ValueError, FileNotFoundError) as exc:
        raise _in_csv_terms(exc, args.train, columns) from None
    except OSError as exc:  # pretrained weights out of reach
        raise CommandError(f"{exc} On the command line: --weights-path PATH or "
                           "--no-pretrained.") from None
    print(f"Fitted in {time.perf_counter() - started:.1f} s ({len(clf.history)} epochs).")
    print(f"Saved the model to {save_model(clf, args.model)}")
    return 0


def run_evaluate(args):
    """``evaluate``: ROC AUC and accuracy of a saved model on a labelled pairs CSV."""
    columns = [args.image1, args.image2]
    frame = _read_pairs(args.data, columns, [args.label])
    clf = load_model(args.model)
    y = frame[args.label].to_numpy()
    unknown = sorted({str(label) for label in pd.unique(y)} - {str(c) for c in clf.classes_})
    if unknown:
        raise CommandError(f"column {args.label!r} of {args.data} holds labels {unknown} that "
                           f"the model does not know (its labels: {clf.classes_.tolist()}).")
    if args.batch_size is not None:
        clf.batch_size = args.batch_size
    threshold = clf.threshold if args.threshold is None else args.threshold
    _, match = _match_probabilities(clf, frame[columns], args.data, columns,
                                    _progress_enabled(args))
    is_match = np.array([str(label) == str(clf.match_label) for label in y])
    other = clf.classes_[clf.classes_ != clf.match_label][0]
    predicted = np.where(match > threshold, clf.match_label, other)
    accuracy = np.mean([str(a) == str(b) for a, b in zip(predicted, y)])
    print(f"pairs     {len(frame)} ({int(is_match.sum())} matching)")
    if 0 < is_match.sum() < len(is_match):
        print(f"ROC AUC   {roc_auc_score(is_match, match):.4f}")
    else:
        print("ROC AUC   undefined: the data hold one label only")
    print(f"accuracy  {accuracy:.4f} at threshold {threshold:g}")
    return 0


def run_predict(args):
    """``predict``: write predictions and match probabilities for a pairs CSV."""
    columns = [args.image1, args.image2]
    frame = _read_pairs(args.data, columns)
    clf = load_model(args.model)
    if args.batch_size is not None:
        clf.batch_size = args.batch_size
    threshold = clf.threshold if args.threshold is None else args.threshold
    proba, match = _match_probabilities(clf, frame[columns], args.data, columns,
                                        _progress_enabled(args))
    other = clf.classes_[clf.classes_ != clf.match_label][0]
    output = frame.copy()
    output["prediction"] = np.where(match > threshold, clf.match_label, other)
    output["probability"] = match
    if args.proba:
        for index, label in enumerate(clf.classes_):
            output[f"proba_{label}"] = proba[:, index]
    path = _write_atomically(args.output, lambda partial: output.to_csv(partial, index=False))
    print(f"Wrote {len(output)} predictions ({int((match > threshold).sum())} matches at "
          f"threshold {threshold:g}) to {path}")
    return 0


def _write_embeddings(path, images, vectors):
    extension = os.path.splitext(path)[1].lower()
    if extension == ".npy":
        def write(partial):
            with open(partial, "wb") as file:
                np.save(file, vectors)

        paths_file = os.path.splitext(path)[0] + ".paths.txt"
        _write_atomically(paths_file, lambda partial: _write_lines(partial, images))
        return _write_atomically(path, write), paths_file
    table = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])
    table.insert(0, "path", images)
    return _write_atomically(path, lambda partial: table.to_csv(partial, index=False)), None


def _write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(f"{line}\n" for line in lines)


def run_embed(args):
    """``embed``: write the embedding of every distinct image of a pairs CSV."""
    from sklearn_imgpair import ImageEmbedder

    if os.path.splitext(args.output)[1].lower() not in (".npy", ".csv"):
        raise CommandError(f"--output must end in .npy or .csv; got {args.output!r}.")
    columns = args.column or ["Image1", "Image2"]
    frame = _read_pairs(args.data, columns)
    images = pd.unique(np.concatenate([frame[column].to_numpy(dtype=object)
                                       for column in columns]))
    embedder = ImageEmbedder(classifier=load_model(args.model),
                             batch_size=args.batch_size or 32).fit()
    chunks = []
    with progress_bar(len(images), "Embedding", unit="image",
                      enabled=_progress_enabled(args)) as bar:
        for start in range(0, len(images), _CHUNK_PAIRS):
            chunks.append(embedder.transform(images[start:start + _CHUNK_PAIRS]))
            bar.update(len(chunks[-1]))
    vectors = np.concatenate(chunks)
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

    model_path = save_model(clf, os.path.join(output, "model.pkl"))
    print(f"4. Saved the fitted classifier to {model_path}")
    print(f"   reload it with: pickle.load(open({model_path!r}, 'rb'))")
    print(f"   or use it from the shell: sklearn-imgpair predict --model {model_path} "
          "--data pairs.csv --output predictions.csv")
    return 0
