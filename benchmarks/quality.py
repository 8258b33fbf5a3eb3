"""Quality benchmark: fit ImagePairClassifier from random weights within a CPU time budget.

Fits on a pairs CSV (AutoMM tutorial format: Image1, Image2, Label; image paths
relative to the CSV's folder) and prints, for every test CSV, the ROC AUC of
the fitted matcher beside two baselines computed in the same run (cosine
similarity of raw 32x32 pixels and of 8x8x8 colour histograms), plus the
accuracy of ``predict`` at the default threshold and the best-threshold
accuracy. The last line is a JSON object with every figure.

Usage::

    python benchmarks/quality.py                      # COIL-100 hard pairs, 900 s
    python benchmarks/quality.py --time-budget 120 --train my/train.csv --test my/test.csv
"""

import argparse
import json
import os
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from skorch.dataset import ValidSplit

from sklearn_imgpair import IdentityValidSplit, ImagePairClassifier, ViewAugmentation

COIL = Path(__file__).resolve().parents[2] / "shared" / "data" / "coil-100"

# A small Swin for 64 px inputs: 4 px patches, 4x4 windows, three stages.
SMALL_SWIN = dict(patch_size=4, window_size=4, embed_dim=48, depths=(2, 2, 2),
                  num_heads=(2, 4, 8))


# Augmentations compared in the ablation; all keep the object in the picture.
AUGMENTATIONS = {
    "none": False,
    "flip": ViewAugmentation(min_scale=1.0, max_rotation=0.0, brightness=0.0, contrast=0.0),
    "mild": ViewAugmentation(min_scale=0.75, max_rotation=10.0, brightness=0.1, contrast=0.1),
    "default": True,  # ViewAugmentation(): crops to 60 %, +-20 degrees, flips, +-25 % colour
}


def read_pairs(csv_path):
    """Read a pairs CSV and make its image paths absolute."""
    frame = pd.read_csv(csv_path)
    root = Path(csv_path).resolve().parent
    for column in ("Image1", "Image2"):
        frame[column] = [str(root / path) for path in frame[column]]
    return frame[["Image1", "Image2"]], frame["Label"].to_numpy()


def _pixels(path):
    """Raw 32x32 RGB pixels, centred per image (cosine = Pearson correlation)."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BICUBIC),
                            dtype=np.float64).ravel()
    return pixels - pixels.mean()


def _histogram(path):
    """Square root of the 8x8x8 RGB colour histogram (Hellinger features)."""
    with Image.open(path) as image:
        codes = np.asarray(image.convert("RGB"), dtype=np.int64) // 32
    index = codes[..., 0] * 64 + codes[..., 1] * 8 + codes[..., 2]
    return np.sqrt(np.bincount(index.ravel(), minlength=512).astype(np.float64))


def baseline_auc(X, y, featurize):
    """ROC AUC of the cosine similarity of hand-made features (no learning)."""
    paths = np.unique(X.to_numpy().ravel())
    features = {path: featurize(path) for path in paths}
    a = np.stack([features[p] for p in X.iloc[:, 0]])
    b = np.stack([features[p] for p in X.iloc[:, 1]])
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(roc_auc_score(y, cosine))


def best_threshold_accuracy(y_true, score):
    """Highest accuracy over all thresholds on ``score``."""
    order = np.argsort(-score)
    y_sorted = y_true[order]
    # Predict positive for the top k, k = 0..n.
    true_pos = np.concatenate([[0], np.cumsum(y_sorted)])
    true_neg = (1 - y_sorted).sum() - np.concatenate([[0], np.cumsum(1 - y_sorted)])
    return float(((true_pos + true_neg) / len(y_true)).max())


def add_fit_arguments(parser):
    """The options of the fit (time budget, model, training), shared with retrieval.py."""
    parser.add_argument("--time-budget", type=float, default=900.0,
                        help="seconds for the whole fit (default: 900)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--patience", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pair-mining", choices=["graph", "none"], default="graph",
                        help="identities mined from the pair graph, or the listed pairs only")
    parser.add_argument("--views-per-identity", type=int, default=4)
    parser.add_argument("--mining-weight", type=float, default=1.0)
    parser.add_argument("--mining-temperature", type=float, default=0.1)
    parser.add_argument("--valid-split", choices=["pairs", "identities"], default="pairs",
                        help="hold out random pairs, or whole identities, for validation")
    parser.add_argument("--valid-size", type=float, default=0.1)
    parser.add_argument("--augment", choices=sorted(AUGMENTATIONS), default="default",
                        help="augmentation of training images (default: ViewAugmentation())")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")


def make_classifier(args):
    """The classifier that the options of :func:`add_fit_arguments` describe, unfitted."""
    if args.valid_split == "identities":
        train_split = IdentityValidSplit(args.valid_size)
    else:
        train_split = ValidSplit(args.valid_size, stratified=True)
    return ImagePairClassifier(
        pretrained=False, model_kwargs=SMALL_SWIN, image_size=args.image_size,
        time_limit=args.time_budget, max_epochs=10_000, lr=args.lr,
        batch_size=args.batch_size, random_state=args.seed, verbose=1,
        optimizer__weight_decay=0.05, callbacks__early_stopping__patience=args.patience,
        pair_mining=args.pair_mining, views_per_identity=args.views_per_identity,
        mining_weight=args.mining_weight, mining_temperature=args.mining_temperature,
        augment=AUGMENTATIONS[args.augment], train_split=train_split,
    )


def fit_config(args, clf):
    """The settings of the fit, as the JSON line reports them."""
    return {"model_kwargs": SMALL_SWIN, "image_size": args.image_size,
            "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
            "pair_mining": args.pair_mining,
            "views_per_identity": args.views_per_identity,
            "mining_weight": args.mining_weight,
            "mining_temperature": args.mining_temperature,
            "augment": args.augment, "valid_split": args.valid_split,
            "valid_size": args.valid_size,
            "parameters": sum(p.numel() for p in clf.module_.parameters())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", default=str(COIL / "train_hard.csv"))
    parser.add_argument("--test", nargs="+",
                        default=[str(COIL / "test.csv"), str(COIL / "test_hard.csv")])
    add_fit_arguments(parser)
    parser.add_argument("--save", help="pickle the fitted classifier to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    for path in [args.train, *args.test]:
        if not os.path.isfile(path):
            sys.exit(f"error: pairs file not found: {path}")

    X_train, y_train = read_pairs(args.train)
    print(f"train: {args.train} ({len(y_train)} pairs)  torch threads: "
          f"{torch.get_num_threads()}  {platform.processor() or platform.machine()}")
    clf = make_classifier(args)
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - started
    n_params = sum(p.numel() for p in clf.module_.parameters())
    if args.save:
        with open(args.save, "wb") as file:
            pickle.dump(clf, file)
    results = {
        "config": fit_config(args, clf),
        "train": args.train,
        "time_budget_s": args.time_budget,
        "fit_s": round(fit_seconds, 2),
        "fit_over_budget": round(fit_seconds / args.time_budget, 4),
        "epochs": len(clf.history),
        "best_epoch": int(dict(clf.callbacks_)["early_stopping"].best_epoch_),
        "calibration": dict(clf.callbacks_)["calibration"].calibration_,
        "tests": {},
    }
    print(f"\nfit: {fit_seconds:.1f} s for a {args.time_budget:.0f} s budget "
          f"(ratio {fit_seconds / args.time_budget:.3f}), {len(clf.history)} epochs, "
          f"{n_params} parameters")

    header = f"{'test':<16}{'pairs':>7}{'AUC':>8}{'pixels':>8}{'colour':>8}{'acc@0.5':>9}{'best acc':>9}{'pairs/s':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for test_path in args.test:
        X_test, y_test = read_pairs(test_path)
        started = time.perf_counter()
        proba = clf.predict_proba(X_test)[:, 1]
        predict_seconds = time.perf_counter() - started
        y_match = (y_test == 1).astype(int)
        figures = {
            "pairs": int(len(y_test)),
            "roc_auc": float(roc_auc_score(y_match, proba)),
            "pixel_baseline_auc": baseline_auc(X_test, y_match, _pixels),
            "colour_histogram_baseline_auc": baseline_auc(X_test, y_match, _histogram),
            "accuracy_default_threshold": float(((proba > 0.5) == y_match).mean()),
            "accuracy_best_threshold": best_threshold_accuracy(y_match, proba),
            "predicted_match_rate": float((proba > 0.5).mean()),
            "predict_pairs_per_s": float(len(y_test) / predict_seconds),
        }
        results["tests"][Path(test_path).name] = figures
        print(f"{Path(test_path).name:<16}{figures['pairs']:>7}{figures['roc_auc']:>8.4f}"
              f"{figures['pixel_baseline_auc']:>8.4f}"
              f"{figures['colour_histogram_baseline_auc']:>8.4f}"
              f"{figures['accuracy_default_threshold']:>9.4f}"
              f"{figures['accuracy_best_threshold']:>9.4f}{figures['predict_pairs_per_s']:>9.0f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
