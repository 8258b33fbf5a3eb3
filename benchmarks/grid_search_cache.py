"""Embedding cache benchmark: a 6-candidate grid search over a frozen-embedder pipeline.

Times, in one run and side by side:

* one embedding pass over every distinct image (the floor),
* ``GridSearchCV`` over ``logisticregression__C`` (6 candidates, 3 folds, refit)
  of ``make_pipeline(PairFeatures(ImageEmbedder(...)), LogisticRegression())``
  with the embedding cache off (``cache=False``: every fit and score embeds again),
* the same search with the cache on (the default),
* the same search on precomputed features (the classifier's own cost, which no
  cache can remove).

Uses the COIL-100 pairs in ``../shared/data`` when present, else a synthetic set.

Usage::

    python benchmarks/grid_search_cache.py [--pairs 2000] [--image-size 64] [--repeats 3]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sklearn_imgpair import ImageEmbedder, PairFeatures
from sklearn_imgpair._io import embedding_cache as _cache
from sklearn_imgpair.datasets import make_image_pairs

COIL = Path(__file__).resolve().parents[2] / "shared" / "data" / "coil-100"
SMALL_SWIN = dict(patch_size=4, window_size=4, embed_dim=48, depths=(2, 2, 2), num_heads=(2, 4, 8))
GRID = {"logisticregression__C": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]}


def load_pairs(n_pairs):
    if (COIL / "train.csv").is_file():
        frame = pd.read_csv(COIL / "train.csv").head(n_pairs)
        X = frame[["Image1", "Image2"]].map(lambda p: str(COIL / p))
        return X, frame["Label"].to_numpy(), "COIL-100 train.csv"
    train, _ = make_image_pairs(tempfile.mkdtemp(), n_products=60, n_views=8,
                                n_pairs=n_pairs, test_size=0.01)
    return train[["Image1", "Image2"]], train["Label"].to_numpy(), "synthetic"


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    X, y, source = load_pairs(args.pairs)
    n_images = len(np.unique(X.to_numpy().ravel()))
    embedder = ImageEmbedder(pretrained=False, image_size=args.image_size,
                             model_kwargs=SMALL_SWIN, batch_size=64)

    def one_pass():
        embedder.set_params(cache=False).fit().transform(np.unique(X.to_numpy().ravel()))

    def search(cache):
        _cache._PROCESS_STORE.clear()
        pipeline = make_pipeline(PairFeatures(embedder.set_params(cache=cache)),
                                 LogisticRegression(max_iter=1000))
        GridSearchCV(pipeline, GRID, scoring="roc_auc", cv=3).fit(X, y)

    def search_on_features():
        # The classifier's own share: the same search on precomputed pair features.
        features = PairFeatures(embedder.set_params(cache=True)).fit(X).transform(X)
        GridSearchCV(LogisticRegression(max_iter=1000), {"C": GRID["logisticregression__C"]},
                     scoring="roc_auc", cv=3).fit(features, y)

    rows = {"one embedding pass": [], "grid search, no cache": [], "grid search, cache": [],
            "grid search on features": []}
    for _ in range(args.repeats):
        rows["one embedding pass"].append(timed(one_pass))
        rows["grid search, no cache"].append(timed(lambda: search(False)))
        rows["grid search, cache"].append(timed(lambda: search(True)))
        rows["grid search on features"].append(timed(search_on_features))
    medians = {name: statistics.median(times) for name, times in rows.items()}

    print(f"data: {source}, {len(y)} pairs, {n_images} distinct images, {args.image_size} px, "
          f"{len(GRID['logisticregression__C'])} candidates x 3 folds + refit, "
          f"median of {args.repeats}")
    print(f"{'':<24}{'seconds':>10}{'x one pass':>12}")
    for name, seconds in medians.items():
        print(f"{name:<24}{seconds:>10.2f}{seconds / medians['one embedding pass']:>12.2f}")
    speedup = medians["grid search, no cache"] / medians["grid search, cache"]
    print(f"cache speed-up: {speedup:.1f}x")
    print(json.dumps({"pairs": len(y), "images": n_images, "seconds": medians,
                      "cached_over_one_pass": medians["grid search, cache"]
                      / medians["one embedding pass"], "speedup": speedup}))


if __name__ == "__main__":
    main()
