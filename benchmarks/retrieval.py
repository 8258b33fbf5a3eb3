"""Retrieval benchmark: leave-one-out search among the COIL-100 test objects' images.

Fits ImagePairClassifier from random weights with quality.py's settings and time
budget, then lets every image of the test objects (``splits.json``; none of them
seen in training) query all the others, by the cosine of the fitted model's
embeddings (``ImageNeighbors(classifier=clf).kneighbors()``). A neighbour is
relevant when it shows the same object. It prints recall@1, recall@5, MAP@R,
R-precision and precision@1 (equal to recall@1 here: every query has relevant
images), beside the same figures for two hand-made baselines computed in the
same run (cosine of raw 32x32 pixels and of 8x8x8 colour histograms, searched
with scikit-learn's ``NearestNeighbors``). The last line is a JSON object with
every figure.

Usage::

    python benchmarks/retrieval.py                        # 900 s budget, as quality.py
    python benchmarks/retrieval.py --time-budget 300 --objects 6
"""

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
from quality import (
    COIL,
    _histogram,
    _pixels,
    add_fit_arguments,
    fit_config,
    make_classifier,
    read_pairs,
)
from sklearn.neighbors import NearestNeighbors

from sklearn_imgpair import ImageNeighbors
from sklearn_imgpair.metrics import (
    mean_average_precision_at_r,
    precision_at_1,
    r_precision,
    recall_at_k,
)

# COIL-100 file names: obj<OBJECT>__<ANGLE>.png.
_FILE_NAME = re.compile(r"obj(\d+)__(\d+)\.png")
_METRICS = (("recall@1", "recall_at_1"), ("recall@5", "recall_at_5"), ("MAP@R", "map_at_r"),
            ("R-precision", "r_precision"), ("precision@1", "precision_at_1"))


def coil_test_images(coil, n_objects=None):
    """Paths and object ids of every image of the test objects in ``splits.json``.

    Parameters
    ----------
    coil : Path
        The COIL-100 folder.
    n_objects : int, default=None
        Keep the first ``n_objects`` test objects (in the order of
        ``splits.json``); None keeps all.

    Returns
    -------
    paths : ndarray of str, sorted by object, then angle
    objects : ndarray of int
    """
    splits = json.loads((coil / "splits.json").read_text())
    objects = splits["splits"]["test"]["objects"][:n_objects]
    found = []
    for name in os.listdir(coil / splits.get("images", "images")):
        match = _FILE_NAME.fullmatch(name)
        if match and int(match[1]) in objects:
            found.append((int(match[1]), int(match[2]), str(coil / "images" / name)))
    found.sort()
    return (np.array([path for *_, path in found], dtype=object),
            np.array([obj for obj, *_ in found]))


def retrieval_scores(objects, neighbors):
    """The retrieval metrics of leave-one-out neighbours (each query left out of its own list)."""
    return {
        "recall_at_1": recall_at_k(objects, objects, neighbors, k=1, exclude_self=True),
        "recall_at_5": recall_at_k(objects, objects, neighbors, k=5, exclude_self=True),
        "map_at_r": mean_average_precision_at_r(objects, objects, neighbors, exclude_self=True),
        "r_precision": r_precision(objects, objects, neighbors, exclude_self=True),
        "precision_at_1": precision_at_1(objects, objects, neighbors, exclude_self=True),
    }


def baseline_neighbors(paths, featurize, n_neighbors):
    """Leave-one-out cosine neighbours of hand-made features, with scikit-learn."""
    features = np.stack([featurize(path) for path in paths])
    search = NearestNeighbors(n_neighbors=n_neighbors, metric="cosine", algorithm="brute")
    return search.fit(features).kneighbors(return_distance=False)


def format_table(rows):
    header = f"{'features':<20}" + "".join(f"{name:>13}" for name, _ in _METRICS)
    lines = [header, "-" * len(header)]
    for name, scores in rows.items():
        lines.append(f"{name:<20}" + "".join(f"{scores[key]:>13.4f}" for _, key in _METRICS))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coil", default=str(COIL),
                        help="the COIL-100 folder (splits.json, images/, the pair CSVs)")
    parser.add_argument("--train", help="training pairs CSV (default: COIL's train_hard.csv)")
    parser.add_argument("--objects", type=int,
                        help="search among the first N test objects only (default: all 12)")
    add_fit_arguments(parser)
    args = parser.parse_args(argv)
    coil = Path(args.coil)
    train = args.train or str(coil / "train_hard.csv")
    missing = [path for path in (coil / "splits.json", Path(train)) if not path.is_file()]
    if missing:
        reason = f"COIL-100 data not found ({', '.join(map(str, missing))} missing)"
        print(f"retrieval benchmark skipped: {reason}.")
        print(json.dumps({"skipped": reason}))
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    paths, objects = coil_test_images(coil, args.objects)
    X_train, y_train = read_pairs(train)
    print(f"train: {train} ({len(y_train)} pairs)  search: {len(paths)} images of "
          f"{len(np.unique(objects))} test objects  torch threads: {torch.get_num_threads()}  "
          f"{platform.processor() or platform.machine()}")
    clf = make_classifier(args)
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - started

    # MAP@R needs the R other views of each object: as many neighbours as the largest R.
    n_neighbors = int(np.bincount(objects).max()) - 1
    started = time.perf_counter()
    search = ImageNeighbors(classifier=clf).fit(paths)
    ranked = search.kneighbors(n_neighbors=n_neighbors, return_distance=False)
    search_seconds = time.perf_counter() - started
    rows = {"fitted model": retrieval_scores(objects, ranked)}
    for name, featurize in (("raw pixels", _pixels), ("colour histogram", _histogram)):
        rows[name] = retrieval_scores(objects, baseline_neighbors(paths, featurize, n_neighbors))

    print(f"\nfit: {fit_seconds:.1f} s for a {args.time_budget:.0f} s budget, "
          f"{len(clf.history)} epochs; embedding and searching {len(paths)} images: "
          f"{search_seconds:.1f} s\n")
    print(format_table(rows))
    print(json.dumps({
        "config": fit_config(args, clf),
        "train": train,
        "time_budget_s": args.time_budget,
        "fit_s": round(fit_seconds, 2),
        "epochs": len(clf.history),
        "search_s": round(search_seconds, 2),
        "n_images": len(paths),
        "n_objects": int(len(np.unique(objects))),
        "n_neighbors": n_neighbors,
        "scores": {name: {key: round(float(value), 4) for key, value in scores.items()}
                   for name, scores in rows.items()},
    }))


if __name__ == "__main__":
    main()
