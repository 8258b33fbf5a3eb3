"""Quality benchmark: fit ImagePairClassifier from random weights within a CPU time budget.

Fits on a pairs CSV (AutoMM tutorial format: Image1, Image2, Label; image paths
relative to the CSV's folder) and prints, for every test CSV, the ROC AUC of
the fitted matcher beside two baselines computed in the same run (cosine
similarity of raw 32x32 pixels and of 8x8x8 colour histograms), the
accuracy of ``predict`` at the default threshold and the best-threshold
accuracy, and the reliability of the probabilities: expected calibration
error over 10 equal-count bins (ECE), the Brier score, a reliability table
and the probability of each test image paired with itself and with its JPEG
re-encoding (quality 90). Two more ECEs say how far calibration could go: of
a head re-fitted on the test pairs themselves, and of one fitted on half of the
test file's identities, on the other half (see ``calibration_transfer``).
Every figure of
the matcher is given without and with test-time flips (``_tta``), from the
same fit. The last line is a JSON object with every figure.

Usage::

    python benchmarks/quality.py                      # COIL-100 hard pairs, 900 s
    python benchmarks/quality.py --time-budget 120 --train my/train.csv --test my/test.csv
    # the two-fold object split (train on 30 objects, test on the other 30):
    python benchmarks/quality.py --train ../shared/data/coil-100/half_a_hard.csv \
        --test ../shared/data/coil-100/half_b_hard.csv ../shared/data/coil-100/half_b.csv
    python benchmarks/quality.py --evaluate model.pkl   # a model saved with --save
"""

import argparse
import io
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
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from skorch.dataset import ValidSplit

from sklearn_imgpair import (
    IdentityValidSplit,
    ImageEmbedder,
    ImagePairClassifier,
    ViewAugmentation,
    WeightAveraging,
)
from sklearn_imgpair._training.mining import match_components

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


def reliability(y_true, proba, n_bins=10, sample_weight=None):
    """Per equal-count bin of ``proba``: pairs, mean predicted probability, match rate.

    Parameters
    ----------
    y_true : ndarray of shape (n_pairs,)
        1 for a match, 0 otherwise.
    proba : ndarray of shape (n_pairs,)
        Predicted probability of a match.
    n_bins : int, default=10
        Number of bins.
    sample_weight : array-like of shape (n_pairs,), default=None
        Weights of the pairs: the bins then hold about equal weight instead
        of equal counts (a pair that would cross a bin's share goes to the
        next bin), and the means and the ECE are weighted.

    Returns
    -------
    bins : list of (int, float, float)
        Pairs, mean predicted probability and match rate of each non-empty bin.
    ece : float
        Expected calibration error: the mean of ``|mean predicted - match
        rate|`` over the bins, weighted by their pairs (or their weight).
    """
    weight = np.ones(len(proba)) if sample_weight is None else np.asarray(sample_weight, float)
    order = np.argsort(proba, kind="stable")
    if sample_weight is None:
        parts = np.array_split(order, n_bins)
    else:
        mass = np.cumsum(weight[order])
        # A bin takes the pairs whose cumulative weight stays within its share
        # (with a margin for rounding).
        bounds = mass[-1] * (np.arange(1, n_bins) / n_bins + 1e-12)
        parts = np.split(order, np.searchsorted(mass, bounds, side="right"))
    parts = [part for part in parts if len(part)]
    bins = [(len(part), float(np.average(proba[part], weights=weight[part])),
             float(np.average(y_true[part], weights=weight[part]))) for part in parts]
    ece = sum(weight[part].sum() * abs(predicted - observed)
              for part, (_, predicted, observed) in zip(parts, bins))
    return bins, float(ece / weight.sum())


def _platt(logits, y_true, sample_weight=None):
    """A logistic regression of ``y_true`` on ``logits`` (Platt scaling), as a function."""
    model = LogisticRegression(C=1e4).fit(logits.reshape(-1, 1), y_true,
                                          sample_weight=sample_weight)
    return lambda scores: model.predict_proba(scores.reshape(-1, 1))[:, 1]


def _balance(y_true, rate):
    """Weights summing to 1 under which matches make up the share ``rate``."""
    return np.where(y_true == 1, rate / y_true.sum(), (1 - rate) / (1 - y_true).sum())


def calibration_transfer(logits, y_true, X, repeats=20, seed=0):
    """How well a head of the classifier's form calibrates on these pairs, and across identities.

    A calibrated head is ``a * atanh(cosine) + b`` (an uncalibrated one
    ``a * cosine + b``): Platt scaling of its logits re-fits ``a`` and
    ``b``. Identities are the connected components of matching pairs (on
    COIL-100, an object's views form one large component and a few stray
    views are identities of their own).

    Parameters
    ----------
    logits : ndarray of shape (n_pairs,)
        The classifier's ``decision_function`` on ``X``.
    y_true : ndarray of shape (n_pairs,)
        1 for a match, 0 otherwise.
    X : DataFrame of shape (n_pairs, 2)
        The pairs' images.
    repeats : int, default=20
        Random splits of the identities.
    seed : int, default=0
        Seed of the splits.

    Returns
    -------
    figures : dict
        ``best_platt_ece``: ECE of a head re-fitted on these very pairs, an
        in-sample (optimistic) figure of how well the network's scores can be
        mapped to probabilities by a head of its form.
        ``other_identities_platt_ece``: the median, over ``repeats`` random
        splits of the identities into two sides of about equal numbers of
        pairs, of the ECE on the pairs within one side of a head fitted on the
        pairs within the other; both sides are weighted back to the file's
        match rate. That is calibration on identities the network never saw,
        of the same kind and half as many; well above the first figure, it
        says the mapping from score to probability differs from identity to
        identity. ``other_identities_platt_ece_q10_q90``: its 10th and 90th
        percentiles. None where no split has both classes on both sides.
    """
    y_true = np.asarray(y_true)
    best = reliability(y_true, _platt(logits, y_true)(logits))[1]
    rate = y_true.mean()
    components = match_components(X.to_numpy(), y_true == 1)
    n_identities = int(components.max()) + 1
    cells = np.bincount(components.ravel(), minlength=n_identities)
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(repeats):
        # Identities in random order, on the first side until it holds half the pair cells.
        order = rng.permutation(n_identities)
        first = np.zeros(n_identities, dtype=bool)
        first[order[np.cumsum(cells[order]) <= cells.sum() / 2]] = True
        side = first[components]
        fit_on, test_on = side.all(axis=1), (~side).all(axis=1)
        if min(np.unique(y_true[fit_on]).size, np.unique(y_true[test_on]).size) < 2:
            continue
        fit_y, test_y = y_true[fit_on], y_true[test_on]
        head = _platt(logits[fit_on], fit_y, _balance(fit_y, rate) * len(fit_y))
        errors.append(reliability(test_y, head(logits[test_on]),
                                  sample_weight=_balance(test_y, rate))[1])
    return {"best_platt_ece": float(best),
            "other_identities_platt_ece": float(np.median(errors)) if errors else None,
            "other_identities_platt_ece_q10_q90":
                [float(q) for q in np.quantile(errors, [0.1, 0.9])] if errors else None}


def _reencoded(path):
    """The image of ``path`` re-encoded as a JPEG (quality 90), as bytes: a near-identical copy."""
    with Image.open(path) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def evaluate(clf, X_test, y_match, prefix="", transfer_seed=None):
    """ROC AUC, accuracies and reliability of ``clf`` on one test file.

    With ``transfer_seed``, also :func:`calibration_transfer`'s figures.
    """
    started = time.perf_counter()
    # predict_proba's match column is expit of these logits, in float64.
    logits = clf.decision_function(X_test).astype(np.float64)
    proba = expit(logits)
    seconds = time.perf_counter() - started
    bins, ece = reliability(y_match, proba)
    images = np.unique(X_test.to_numpy().ravel())
    self_pairs = pd.DataFrame({column: images for column in X_test.columns})
    self_proba = clf.predict_proba(self_pairs)[:, 1]
    first, second = X_test.columns
    near_pairs = pd.DataFrame({first: images, second: [_reencoded(path) for path in images]})
    near_proba = clf.predict_proba(near_pairs)[:, 1]
    figures = {} if transfer_seed is None else calibration_transfer(
        logits, y_match, X_test, seed=transfer_seed)
    return {
        **figures,
        prefix + "roc_auc": float(roc_auc_score(y_match, proba)),
        prefix + "accuracy_default_threshold": float(((proba > 0.5) == y_match).mean()),
        prefix + "accuracy_best_threshold": best_threshold_accuracy(y_match, proba),
        prefix + "predicted_match_rate": float((proba > 0.5).mean()),
        prefix + "ece": ece,
        prefix + "brier": float(np.mean((proba - y_match) ** 2)),
        prefix + "reliability": [[n, round(p, 4), round(o, 4)] for n, p, o in bins],
        prefix + "self_pair_min_proba": float(self_proba.min()),
        prefix + "self_pair_median_proba": float(np.median(self_proba)),
        prefix + "jpeg_copy_min_proba": float(near_proba.min()),
        prefix + "jpeg_copy_median_proba": float(np.median(near_proba)),
        prefix + "predict_pairs_per_s": float(len(y_match) / seconds),
    }


def part_aucs(clf, X, y):
    """ROC AUC of each part of a colour-blended network's cosine, alone, on the same pairs.

    With ``colour_share`` s, an embedding is ``[sqrt(1 - s) * backbone, sqrt(s) * colours]``:
    the cosine of the first block over ``1 - s`` is the backbone's, that of the second over
    ``s`` the network's colour histogram's (:class:`ColourHistogram` of its input, here
    soft-binned at ``image_size``: another hand-made baseline than ``_histogram``'s).
    """
    share = clf.module_.colour_share
    paths = np.unique(X.to_numpy().ravel())
    vectors = ImageEmbedder(classifier=clf, cache=False).fit().transform(paths)
    rows = {path: row for row, path in enumerate(paths)}
    a = vectors[[rows[path] for path in X.iloc[:, 0]]]
    b = vectors[[rows[path] for path in X.iloc[:, 1]]]
    d = vectors.shape[1] - clf.module_.colour.dim
    return {"backbone_part_auc": float(roc_auc_score(y, (a[:, :d] * b[:, :d]).sum(1))),
            "colour_part_auc": float(roc_auc_score(y, (a[:, d:] * b[:, d:]).sum(1))),
            "colour_share": share}


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
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="fp32",
                        help="autocast precision of the backbone, in training and prediction "
                             "(auto: fp32 in training, bf16 in prediction where native)")
    parser.add_argument("--weights-path",
                        help="start from these backbone weights (e.g. pretrain_synthetic.py's)")
    parser.add_argument("--head-link", choices=["atanh", "linear"], default="linear",
                        help="link of the match head in training (SiameseNet's head_link)")
    parser.add_argument("--calibration-link", choices=["atanh", "linear"], default="atanh",
                        help="link of the head after calibration (HeadCalibration's link)")
    parser.add_argument("--drop-path", type=float, default=0.0,
                        help="stochastic depth rate of the Swin blocks (timm's drop_path_rate)")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="decay of a WeightAveraging callback (0: none)")
    parser.add_argument("--hard-identities", type=float, default=0.0,
                        help="share of each identity batch drawn as nearest look-alikes")
    parser.add_argument("--colour-share", type=float, default=0.0,
                        help="weight of the colour histogram's cosine in the similarity "
                             "(SiameseNet's colour_share; 0: none)")


def make_classifier(args):
    """The classifier that the options of :func:`add_fit_arguments` describe, unfitted."""
    if args.valid_split == "identities":
        train_split = IdentityValidSplit(args.valid_size)
    else:
        train_split = ValidSplit(args.valid_size, stratified=True)
    return ImagePairClassifier(
        pretrained=False, weights_path=args.weights_path, image_size=args.image_size,
        model_kwargs={**SMALL_SWIN,
                      **({"drop_path_rate": args.drop_path} if args.drop_path else {})},
        time_limit=args.time_budget, max_epochs=10_000, lr=args.lr,
        batch_size=args.batch_size, random_state=args.seed, verbose=1,
        optimizer__weight_decay=0.05, callbacks__early_stopping__patience=args.patience,
        pair_mining=args.pair_mining, views_per_identity=args.views_per_identity,
        mining_weight=args.mining_weight, mining_temperature=args.mining_temperature,
        augment=AUGMENTATIONS[args.augment], train_split=train_split,
        precision=args.precision, hard_identities=args.hard_identities,
        module__head_link=args.head_link, module__colour_share=args.colour_share,
        callbacks__calibration__link=args.calibration_link,
        callbacks=[("weight_averaging", WeightAveraging(args.ema))] if args.ema else None,
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
            "precision": args.precision, "head_link": args.head_link,
            "calibration_link": args.calibration_link, "ema": args.ema,
            "drop_path": args.drop_path, "weights_path": args.weights_path,
            "hard_identities": args.hard_identities, "colour_share": args.colour_share,
            "parameters": sum(p.numel() for p in clf.module_.parameters())}


def fit(args):
    """Fit the classifier on ``args.train``; return it and the fit's figures."""
    X_train, y_train = read_pairs(args.train)
    print(f"train: {args.train} ({len(y_train)} pairs)  torch threads: "
          f"{torch.get_num_threads()}  {platform.processor() or platform.machine()}")
    clf = make_classifier(args)
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - started
    if args.save:
        with open(args.save, "wb") as file:
            pickle.dump(clf, file)
    print(f"\nfit: {fit_seconds:.1f} s for a {args.time_budget:.0f} s budget "
          f"(ratio {fit_seconds / args.time_budget:.3f}), {len(clf.history)} epochs, "
          f"{sum(p.numel() for p in clf.module_.parameters())} parameters")
    return clf, {
        "config": fit_config(args, clf),
        "train": args.train,
        "time_budget_s": args.time_budget,
        "fit_s": round(fit_seconds, 2),
        "fit_over_budget": round(fit_seconds / args.time_budget, 4),
        "epochs": len(clf.history),
        "steps": sum("train_loss" in batch for row in clf.history for batch in row["batches"]),
        "best_epoch": int(dict(clf.callbacks_)["early_stopping"].best_epoch_),
        "calibration": dict(clf.callbacks_)["calibration"].calibration_,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", default=str(COIL / "train_hard.csv"))
    parser.add_argument("--test", nargs="+",
                        default=[str(COIL / "test.csv"), str(COIL / "test_hard.csv")])
    add_fit_arguments(parser)
    parser.add_argument("--save", help="pickle the fitted classifier to this file")
    parser.add_argument("--evaluate", metavar="PICKLE",
                        help="evaluate a classifier saved with --save instead of fitting one")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    for path in [*([] if args.evaluate else [args.train]), *args.test]:
        if not os.path.isfile(path):
            sys.exit(f"error: pairs file not found: {path}")

    if args.evaluate:
        with open(args.evaluate, "rb") as file:
            clf = pickle.load(file)  # a file this script wrote (--save): trusted
        results = {"evaluated": args.evaluate}
    else:
        clf, results = fit(args)
    results["tests"] = {}
    module = clf.module_
    saved_flip = module.test_time_flip
    header = (f"{'test':<16}{'TTA':>4}{'pairs':>6}{'AUC':>8}{'pixels':>8}{'colour':>8}"
              f"{'acc@0.5':>8}{'best':>7}{'ECE':>7}{'Brier':>7}{'self':>7}{'pairs/s':>8}")
    print("\n" + header + "\n" + "-" * len(header))
    for test_path in args.test:
        X_test, y_test = read_pairs(test_path)
        y_match = (y_test == 1).astype(int)
        figures = {
            "pairs": int(len(y_test)),
            "pixel_baseline_auc": baseline_auc(X_test, y_match, _pixels),
            "colour_histogram_baseline_auc": baseline_auc(X_test, y_match, _histogram),
        }
        for prefix, flip in [("", False), ("tta_", True)]:
            module.test_time_flip = flip
            figures.update(evaluate(clf, X_test, y_match, prefix,
                                    transfer_seed=None if flip else args.seed))
            print(f"{Path(test_path).name:<16}{'yes' if flip else 'no':>4}{figures['pairs']:>6}"
                  f"{figures[prefix + 'roc_auc']:>8.4f}{figures['pixel_baseline_auc']:>8.4f}"
                  f"{figures['colour_histogram_baseline_auc']:>8.4f}"
                  f"{figures[prefix + 'accuracy_default_threshold']:>8.4f}"
                  f"{figures[prefix + 'accuracy_best_threshold']:>7.4f}"
                  f"{figures[prefix + 'ece']:>7.4f}{figures[prefix + 'brier']:>7.4f}"
                  f"{figures[prefix + 'self_pair_min_proba']:>7.3f}"
                  f"{figures[prefix + 'predict_pairs_per_s']:>8.0f}")
        module.test_time_flip = saved_flip
        if module.colour_share:
            figures.update(part_aucs(clf, X_test, y_match))
            print(f"  parts alone (ROC AUC): backbone {figures['backbone_part_auc']:.4f}, "
                  f"the network's soft colour histogram {figures['colour_part_auc']:.4f}")
        other = figures["other_identities_platt_ece"]
        spread = figures["other_identities_platt_ece_q10_q90"]
        print(f"  ECE of a head re-fitted on these pairs {figures['best_platt_ece']:.4f}; "
              "fitted on half of the identities, on the others: "
              + ("-" if other is None else
                 f"median {other:.4f} (10-90 %: {spread[0]:.4f} to {spread[1]:.4f})"))
        reliability_row = "  ".join(f"{p:.2f}->{o:.2f}" for _, p, o in figures["reliability"])
        print(f"  reliability (mean predicted -> match rate, 10 equal bins): {reliability_row}")
        results["tests"][Path(test_path).name] = figures
    print(json.dumps(results))


if __name__ == "__main__":
    main()
