"""Pairs per second on one pair list, path by path, against the raw forward's limit.

On the same pairs (a pair CSV in the AutoMM tutorial's format, by default COIL-100's
``half_b_hard.csv`` when ``../shared/data`` is present, else synthetic photos in which
each image appears in about two pairs), measures in one process, run after run in
rotating order:

1. the limit: the backbone's raw forward on the distinct images, decoded, resized and
   normalised beforehand, already on the device, in each precision, as pairs/s (the
   pairs divided by the time to embed their distinct images once);
2. ``ImagePairClassifier.predict_proba`` with its default settings (``precision="auto"``
   and the inference batch size chosen for the device), and in each precision, and
   ``ImageEmbedder.transform`` of the distinct images (default settings, no cache);
3. ``OnnxImageMatcher.predict_proba`` on the classifier exported in float32, int8 with
   dynamic quantisation, and int8 with static quantisation calibrated on
   ``--n-calibration`` images of ``--calibration`` (or of the pairs themselves);
4. the raw forward's images/s by batch size (torch and onnxruntime float32), the curve
   behind the inference batch size chosen for the device.

Every path is a pairs/s figure and a ratio to the raw fp32 forward (the median of the
per-repeat ratios, each from timings seconds apart). Speed does not depend on the
weights, so the network is ``--model`` with random weights. With ``--dev-model FILE`` (a
fitted classifier pickled by ``quality.py --save``) the same paths are also run on that
model over ``--accuracy-pairs`` pairs and each gets its ROC AUC, expected calibration
error (``quality.reliability``) and its largest and mean probability difference to
PyTorch fp32. With ``--automm-json FILE`` (written by AutoMM's anchor script,
``../shared/anchors/automm_csv.py``, on the same pair CSV in the same session) each
path is also shown as a multiple of AutoMM's pairs/s. The last line is a JSON object
with every figure.

Usage::

    python benchmarks/bench_pairs.py --quick              # smoke run, tiny model, seconds
    python benchmarks/bench_pairs.py                      # swin_tiny at 224 px, 400 pairs
    python benchmarks/bench_pairs.py --dev-model fold_ab.pkl --automm-json automm.json
"""

import argparse
import json
import os
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
from _common import (
    MIN_SECONDS,
    MODELS,
    decoded_tensors,
    describe_machine,
    format_table,
    median,
    reusing_pairs,
    timed,
    write_photos,
)
from bench_inference import pretend_fitted, raw_forward
from bench_onnx import pairs_table, some_images
from quality import reliability
from sklearn.metrics import roc_auc_score

from sklearn_imgpair import ImageEmbedder
from sklearn_imgpair._deploy.onnx_runtime import read_graph_pixels
from sklearn_imgpair._images.batch_size import inference_batch_size
from sklearn_imgpair._nn.device import (
    device_type,
    resolve_device,
    resolve_precision,
)
from sklearn_imgpair.onnx import OnnxImageMatcher

DEFAULT_PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "coil-100" / \
    "half_b_hard.csv"


def native_precisions(device):
    """fp32, and bf16 where the device computes it natively (emulated bf16 is 9x slower)."""
    return sorted({"fp32", resolve_precision("auto", device)}, key=["fp32", "bf16"].index)


def read_pairs(path, n_pairs):
    """The first ``n_pairs`` rows of a pair CSV: image paths (n, 2) and labels."""
    X, y = pairs_table(path)
    return X[:n_pairs], y[:n_pairs]


def distinct_images(pairs):
    return pd.unique(pairs.ravel())


def export_variants(clf, folder, calibration):
    """Export ``clf`` in float32, dynamic int8 and calibrated static int8; name -> file."""
    files = {}
    for name, options in {"onnx fp32": {}, "onnx int8 dynamic": {"quantize": "int8"},
                          "onnx int8 static": {"quantize": "int8",
                                               "calibration_images": calibration}}.items():
        path = os.path.join(folder, name.replace(" ", "_") + ".onnx")
        clf.export_onnx(path, **options)
        files[name] = path
    return files


def speed(args, pairs, images, calibration, device, folder):
    """Sections 1 to 3: pairs/s of every path on ``pairs`` (of distinct ``images``)."""
    model = MODELS[args.model]
    size = model["image_size"]
    clf = pretend_fitted(model, size, 32, device, "auto", None, predict_batch_size=None)
    tensors = decoded_tensors(images, clf.module_, size, device)
    batch = args.batch_size or _auto_batch_size(clf)
    onnx_files = export_variants(clf, folder, calibration)
    matchers = {name: OnnxImageMatcher(path) for name, path in onnx_files.items()}
    paths = {}
    for precision in args.precisions:
        paths[f"raw forward {precision}"] = (
            lambda x=None, p=precision: raw_forward(clf.module_.backbone, tensors, batch, p,
                                                    device))
    paths["predict_proba default"] = lambda x=pairs: _predict(clf, x, "auto")
    for precision in args.precisions:  # those "auto" does not already run
        if precision != resolve_precision("auto", device):
            paths[f"predict_proba {precision}"] = (
                lambda x=pairs, p=precision: _predict(clf, x, p))
    embedder = ImageEmbedder(classifier=clf, cache=False).fit()
    paths["transform default"] = lambda x=pairs: embedder.transform(distinct_images(x))
    for name, matcher in matchers.items():
        paths[name] = lambda x=pairs, m=matcher: m.predict_proba(x)
    for name, function in paths.items():  # warm-up: allocations, kernels, sessions
        if name.startswith("raw"):
            raw_forward(clf.module_.backbone, tensors[:batch], batch, name.split()[-1], device)
        else:
            function(pairs[:batch])
    times = {name: [] for name in paths}
    names = list(paths)
    for repeat in range(args.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timed(paths[name], device)[0])
    limit = times["raw forward fp32"]
    rows = [dict(path=name, pairs_per_s=len(pairs) / median(seconds),
                 ratio=median([r / s for r, s in zip(limit, seconds)]))
            for name, seconds in times.items()]
    return rows, batch, clf, tensors


def _auto_batch_size(clf):
    return inference_batch_size(device_type(clf.device), clf.image_size_)


def _predict(clf, pairs, precision):
    clf.set_params(precision=precision)
    return clf.predict_proba(pairs)


def batch_curve(args, clf, images, tensors, device, folder):
    """Section 4: raw forward images/s by batch size, torch fp32 and onnxruntime fp32.

    onnxruntime runs the embedding graph (one input) on the images decoded beforehand.
    """
    tensors = tensors[:max(args.curve)]
    raw = np.stack([read_graph_pixels(path, clf.image_size_) for path in images[:len(tensors)]])
    sizes = [batch for batch in args.curve if batch <= len(tensors)]
    path = os.path.join(folder, "embed.onnx")
    ImageEmbedder(classifier=clf).fit().export_onnx(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    runs = {}
    for batch in sizes:
        n_images = len(tensors) - len(tensors) % batch  # whole batches only

        def run_torch(b=batch, n=n_images):
            raw_forward(clf.module_.backbone, tensors[:n], b, "fp32", device)

        def run_onnx(b=batch, n=n_images):
            for start in range(0, n, b):
                session.run(None, {"images": raw[start:start + b]})

        run_torch(n=batch), run_onnx(n=batch)  # warm-up at this batch size
        runs[batch] = (n_images, run_torch, run_onnx)
    seconds = {(batch, engine): [] for batch in sizes for engine in (1, 2)}
    for _ in range(args.repeats):
        for batch, run in runs.items():
            for engine in (1, 2):
                seconds[batch, engine].append(timed(run[engine], device)[0])
    return [dict(batch=batch, torch=runs[batch][0] / median(seconds[batch, 1]),
                 onnx=runs[batch][0] / median(seconds[batch, 2])) for batch in sizes]


def accuracy(args, calibration, device, folder):
    """ROC AUC, ECE and probability differences of every path on a fitted model."""
    with open(args.dev_model, "rb") as file:
        clf = pickle.load(file)
    clf.set_params(device=device)
    pairs, y = read_pairs(args.pairs, args.accuracy_pairs)
    y_match = (y == clf.match_label).astype(int)
    match = list(clf.classes_).index(clf.match_label)
    probabilities = {}
    for precision in ["fp32", "bf16"]:  # bf16 runs even where emulated: accuracy only
        probabilities[f"torch {precision}"] = _predict(clf, pairs, precision)[:, match]
    for name, path in export_variants(clf, folder, calibration).items():
        probabilities[name] = OnnxImageMatcher(path).predict_proba(pairs)[:, match]
    reference = probabilities["torch fp32"]
    rows = []
    for name, proba in probabilities.items():
        difference = np.abs(proba - reference)
        rows.append(dict(path=name, roc_auc=roc_auc_score(y_match, proba),
                         ece=reliability(y_match, proba)[1],
                         accuracy=float(np.mean((proba > 0.5) == y_match)),
                         max_diff=float(difference.max()), mean_diff=float(difference.mean())))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny model, 24 synthetic pairs, one repeat: a smoke run")
    parser.add_argument("--pairs", default=str(DEFAULT_PAIRS),
                        help="pair CSV (Image1,Image2,Label); synthetic photos if missing")
    parser.add_argument("--n-pairs", type=int, default=400,
                        help="first pairs of --pairs that are timed")
    parser.add_argument("--model", choices=sorted(MODELS), default="swin_tiny")
    parser.add_argument("--precisions", nargs="+", choices=["bf16", "fp16"], default=[],
                        help="precisions besides fp32 (default: bf16 where the device "
                             "computes it natively)")
    parser.add_argument("--batch-size", type=int,
                        help="the raw forward's batch (default: the one chosen for the device)")
    parser.add_argument("--curve", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    parser.add_argument("--calibration", help="pair CSV whose images calibrate static int8 "
                                              "(default: the timed pairs' images, so that "
                                              "--dev-model's int8 figures are in-sample)")
    parser.add_argument("--n-calibration", type=int, default=64)
    parser.add_argument("--dev-model", help="a fitted classifier pickled by quality.py --save")
    parser.add_argument("--accuracy-pairs", type=int, default=2000)
    parser.add_argument("--automm-json", help="AutoMM anchor's JSON output on the same pairs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    args.precisions = (["fp32", *args.precisions] if args.precisions
                       else native_precisions(device))
    MIN_SECONDS["value"] = args.min_seconds
    with tempfile.TemporaryDirectory() as folder:
        if args.quick:
            args.model, args.repeats, args.curve = "tiny", 1, [1, 4]
        if args.quick or not os.path.exists(args.pairs):
            photos = write_photos(os.path.join(folder, "photos"), 24 if args.quick else 400)
            pairs = reusing_pairs(photos)[:args.n_pairs]
        else:
            pairs = read_pairs(args.pairs, args.n_pairs)[0]
        calibration_pairs = (read_pairs(args.calibration, 10**9)[0] if args.calibration
                             else pairs)
        calibration = list(some_images(calibration_pairs, args.n_calibration, seed=0))
        images = distinct_images(pairs)
        print(f"{describe_machine(device)}; {len(pairs)} pairs of {len(images)} "
              f"distinct images; {args.model}, random weights", flush=True)
        rows, batch, clf, tensors = speed(args, pairs, images, calibration, device, folder)
        automm = None
        if args.automm_json:
            with open(args.automm_json) as file:
                automm = _automm_pairs_per_s(json.load(file))
            for row in rows:
                row["automm"] = row["pairs_per_s"] / automm
        print(f"\nPairs per second (raw forward in batches of {batch}; "
              f"AutoMM {automm or 'not measured'} pairs/s)")
        print(format_table(rows, [("path", "path", ""), ("pairs_per_s", "pairs/s", ".2f"),
                                  ("ratio", "x raw fp32 forward", ".2f"),
                                  ("automm", "x AutoMM", ".2f")]))
        curve = batch_curve(args, clf, images, tensors, device, folder)
        print("\nRaw forward, images per second by batch size (fp32)")
        print(format_table(curve, [("batch", "batch", ""), ("torch", "torch", ".2f"),
                                   ("onnx", "onnxruntime", ".2f")]))
        results = {"machine": describe_machine(device), "model": args.model,
                   "n_pairs": len(pairs), "n_images": len(images),
                   "batch_size": batch, "speed": rows, "curve": curve, "automm": automm}
        if args.dev_model:
            results["accuracy"] = accuracy(args, calibration, device, folder)
            print(f"\nOn the fitted model {args.dev_model}, {args.accuracy_pairs} pairs of "
                  f"{args.pairs}")
            print(format_table(results["accuracy"], [
                ("path", "path", ""), ("roc_auc", "ROC AUC", ".4f"), ("ece", "ECE", ".4f"),
                ("accuracy", "accuracy at 0.5", ".4f"),
                ("max_diff", "max |p - p fp32|", ".4f"),
                ("mean_diff", "mean |p - p fp32|", ".5f")]))
    print(json.dumps(results))


def _automm_pairs_per_s(report):
    """AutoMM's predict_proba pairs/s from the anchor script's JSON (its first eval file)."""
    evaluations = report.get("eval") or [{}]
    if "pairs_per_s" not in evaluations[0]:
        sys.exit(f"no eval[0].pairs_per_s in the AutoMM report (keys: {sorted(report)})")
    return float(evaluations[0]["pairs_per_s"])


if __name__ == "__main__":
    main()
