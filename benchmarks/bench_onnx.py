"""ONNX export: onnxruntime (float32 and int8) against PyTorch (float32 and bf16) on the CPU.

Writes deterministic ~500x500 JPEG photos to a temporary folder and, for each
model (swin_tiny at 224 px and the small Swin at 64 px of quality.py, random
weights: pretrained ones cannot be downloaded here), exports an
``ImageEmbedder`` to ONNX three times (float32, int8 with dynamic
quantisation, and static int8 calibrated on the photos themselves) and
measures, side by side in one run on the same images:

1. the network alone: images/s of each engine on the photos decoded and
   resized once beforehand, as ``uint8`` batches (PyTorch: ``module.embed``,
   fp32 and bf16 autocast; onnxruntime: the exported graph, which scales and
   normalises inside);
2. end to end: images/s of ``ImageEmbedder.transform`` (fp32, bf16) and of
   ``OnnxImageMatcher.transform`` (fp32 and int8 files), decoding included;
3. the smallest cosine between each engine's embeddings and PyTorch fp32's;
4. the sizes of the model file (``save``, safetensors) and of the ONNX files.

Every figure is the median over ``--repeats`` runs; a ratio (against PyTorch
fp32) is the median of the ratios of each repeat, whose timings ran seconds
apart, in rotating order. The last line is a JSON object with every figure.

With ``--model`` (a fitted classifier: a pickle written by ``quality.py
--save``, or a model file written by ``save``) and ``--pairs`` (a pairs CSV:
Image1, Image2, Label), it measures instead what int8 costs that model: it
exports the classifier as float32, dynamic int8 and static int8 calibrated on
``--n-calibration`` images drawn from ``--calibration`` (the images of
another pairs CSV, such as the training file; default: ``--pairs``'s own, in
sample), and prints for each file the ROC AUC on the pairs, the largest and
mean absolute difference of its match probabilities to the float32 file's,
and the network's images/s on the CPU (decoded images, median of
``--repeats``). ``--variants all`` adds the alternatives that chose the
defaults of static quantisation (calibration methods, quantised MatMul
outputs, layers kept in float32).

Usage::

    python benchmarks/bench_onnx.py                  # full run, about 10 minutes on 2 cores
    python benchmarks/bench_onnx.py --quick          # smoke run, tiny model, seconds
    python benchmarks/bench_onnx.py --models small --n-images 128 --repeats 5
    python benchmarks/bench_onnx.py --model fold_ab.pkl \
        --pairs ../shared/data/coil-100/half_b_hard.csv \
        --calibration ../shared/data/coil-100/half_a_hard.csv
"""

import argparse
import json
import os
import pickle
import tempfile

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import torch
from _common import (
    MIN_SECONDS,
    MODELS,
    describe_machine,
    format_table,
    median,
    timed,
    write_photos,
)
from sklearn.metrics import roc_auc_score

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier
from sklearn_imgpair._deploy.onnx_quantize import (
    FLOAT32_MODULES,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from sklearn_imgpair._images.pixels import read_pixels
from sklearn_imgpair._nn.device import autocast
from sklearn_imgpair.datasets import read_pairs_csv
from sklearn_imgpair.onnx import OnnxImageMatcher

ENGINES = ["torch fp32", "torch bf16", "onnxruntime fp32", "onnxruntime int8",
           "onnxruntime int8 static"]


def decoded(paths, image_size):
    """The photos decoded and resized once, as the estimators read them: uint8 (n, 3, S, S)."""
    return np.stack([read_pixels(path, image_size).transpose(2, 0, 1) for path in paths])


def torch_network(module, precision):
    def run(images, batch_size):
        with torch.inference_mode(), autocast(precision, "cpu"):
            return np.concatenate([
                module.embed(torch.from_numpy(images[start:start + batch_size])).numpy()
                for start in range(0, len(images), batch_size)])
    return run


def onnx_network(matcher):
    def run(images, batch_size):
        return np.concatenate([
            matcher.session_.run(["embeddings"], {"images": images[start:start + batch_size]})[0]
            for start in range(0, len(images), batch_size)])
    return run


def size_mb(path):
    return os.path.getsize(path) / 2**20


def bench_model(name, args, paths, folder):
    model = MODELS[name]
    size = model["image_size"]
    embedders = {precision: ImageEmbedder(pretrained=False, batch_size=args.batch_size,
                                          cache=False, precision=precision, device="cpu",
                                          **model).fit()
                 for precision in ("fp32", "bf16")}
    fp32 = embedders["fp32"]
    embedders["bf16"].module_.load_state_dict(fp32.module_.state_dict())  # the same weights
    files = {"safetensors": fp32.save(os.path.join(folder, f"{name}.safetensors")),
             "onnx fp32": fp32.export_onnx(os.path.join(folder, f"{name}.onnx")),
             "onnx int8": fp32.export_onnx(os.path.join(folder, f"{name}.int8.onnx"),
                                           quantize="int8"),
             "onnx int8 static": fp32.export_onnx(
                 os.path.join(folder, f"{name}.int8-static.onnx"), quantize="int8",
                 calibration_images=paths)}
    matchers = {key: OnnxImageMatcher(files[f"onnx {key}"], batch_size=args.batch_size)
                for key in ("fp32", "int8", "int8 static")}
    networks = {"torch fp32": torch_network(fp32.module_, "fp32"),
                "torch bf16": torch_network(fp32.module_, "bf16"),
                **{f"onnxruntime {key}": onnx_network(matcher)
                   for key, matcher in matchers.items()}}
    transforms = {"torch fp32": embedders["fp32"].transform,
                  "torch bf16": embedders["bf16"].transform,
                  **{f"onnxruntime {key}": matcher.transform
                     for key, matcher in matchers.items()}}
    images = decoded(paths, size)
    for engine in ENGINES:  # warm-up: allocations, kernels, thread pools
        networks[engine](images[:args.batch_size], args.batch_size)
        transforms[engine](paths[:2])
    network_times = {engine: [] for engine in ENGINES}
    transform_times = {engine: [] for engine in ENGINES}
    vectors = {}
    for repeat in range(args.repeats):
        for engine in ENGINES[repeat % len(ENGINES):] + ENGINES[:repeat % len(ENGINES)]:
            seconds, vectors[engine] = timed(
                lambda: networks[engine](images, args.batch_size), "cpu")
            network_times[engine].append(seconds)
            transform_times[engine].append(timed(lambda: transforms[engine](paths), "cpu")[0])
    reference = vectors["torch fp32"]
    rows = []
    for engine in ENGINES:
        rows.append(dict(
            model=name, size=size, engine=engine,
            network=len(paths) / median(network_times[engine]),
            network_ratio=median([base / own for base, own in zip(
                network_times["torch fp32"], network_times[engine])]),
            transform=len(paths) / median(transform_times[engine]),
            transform_ratio=median([base / own for base, own in zip(
                transform_times["torch fp32"], transform_times[engine])]),
            cosine=float((vectors[engine] * reference).sum(axis=1).min())))
    sizes = dict(model=name, size=size, **{f"{key} MB": size_mb(path)
                                           for key, path in files.items()})
    return rows, sizes


# ----------------------------------------------------------------------
# --model: what int8 costs a fitted classifier
# ----------------------------------------------------------------------


def load_classifier(path):
    """A fitted classifier: a pickle (``quality.py --save``, trusted) or a model file."""
    with open(path, "rb") as file:
        pickled = file.read(1) == b"\x80"  # the first byte of every pickle of protocol >= 2
        if pickled:
            file.seek(0)
            return pickle.load(file)  # a file of your own: pickles run code
    return ImagePairClassifier.load(path, device="cpu")


def pairs_table(path):
    frame = read_pairs_csv(path)
    return frame[["Image1", "Image2"]].to_numpy(dtype=object), frame["Label"].to_numpy()


def some_images(X, n_images, seed):
    """``n_images`` distinct images of the pairs ``X``, drawn at random."""
    images = pd.unique(X.ravel())
    chosen = np.random.default_rng(seed).choice(len(images), min(n_images, len(images)),
                                                replace=False)
    return images[np.sort(chosen)]


def _static(**options):
    return lambda model, images, estimator: quantize_static_int8(model, images, estimator,
                                                                 **options)


def _dynamic(**options):
    return lambda model, images, estimator: quantize_dynamic_int8(model, **options)


# The alternatives of --variants all, from the float32 file's graph: each changes one
# setting of static int8 (export_onnx's), or of dynamic int8 (8-bit weights, as before;
# static's float32 layers, as accurate without images).
ALTERNATIVES = [
    ("static, percentile calibration", _static(method="percentile")),
    ("static, entropy calibration", _static(method="entropy")),
    ("static, 8-bit weights", _static(reduce_range=False)),
    ("static, MatMul outputs int8", _static(quantize_outputs=True)),
    ("static, attn.qkv int8", _static(float32_modules=r"downsample\.reduction$")),
    ("static, every linear layer int8", _static(float32_modules=None)),
    ("dynamic, 8-bit weights (before)", _dynamic(reduce_range=False)),
    ("dynamic, static's float32 layers",
     _dynamic(reduce_range=True, float32_modules=FLOAT32_MODULES)),
]


def write_variant(fp32_path, path, quantize, images):
    """``quantize`` the float32 file's graph; the file keeps the float32 file's metadata."""
    model = onnx.load(fp32_path)
    props = {entry.key: entry.value for entry in model.metadata_props}
    quantized = quantize(model, images, props["estimator"])
    del quantized.metadata_props[:]
    for key, value in {**props, "quantization": "int8 (benchmark variant)"}.items():
        quantized.metadata_props.add(key=key, value=value)
    onnx.save(quantized, path)
    return path


def bench_fitted(args):
    clf = load_classifier(args.model)
    X, y = pairs_table(args.pairs)
    calibration_X = X if args.calibration is None else pairs_table(args.calibration)[0]
    calibration = some_images(calibration_X, args.n_calibration, seed=0)
    y_match = (y == clf.match_label).astype(int)
    size = clf.image_size_
    print(f"Model {args.model}: {clf.model_name} at {size} px; {len(X)} pairs of {args.pairs}; "
          f"calibration: {len(calibration)} images of {args.calibration or args.pairs}"
          + (" (in sample)" if args.calibration is None else ""), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        fp32 = clf.export_onnx(os.path.join(folder, "fp32.onnx"))
        files = {"fp32": fp32,
                 "int8 dynamic": clf.export_onnx(os.path.join(folder, "dynamic.onnx"),
                                                 quantize="int8"),
                 "int8 static": clf.export_onnx(os.path.join(folder, "static.onnx"),
                                                quantize="int8",
                                                calibration_images=calibration)}
        if args.variants == "all":
            pixels = decoded(calibration, size)
            for index, (name, quantize) in enumerate(ALTERNATIVES):
                files[name] = write_variant(fp32, os.path.join(folder, f"{index}.onnx"),
                                            quantize, pixels)
                print(f"... {name} written", flush=True)
        matchers = {name: OnnxImageMatcher(path, batch_size=args.batch_size,
                                           n_threads=args.threads)
                    for name, path in files.items()}
        probabilities = {"torch fp32": clf.set_params(precision="fp32").predict_proba(X)}
        for name, matcher in matchers.items():
            probabilities[name] = matcher.predict_proba(X)
        column = list(clf.classes_).index(clf.match_label)
        images = decoded(some_images(X, args.n_images, seed=1), size)
        runs = {name: (lambda matcher=matcher: [
            matcher._run(images[start:start + args.batch_size])
            for start in range(0, len(images), args.batch_size)])
            for name, matcher in matchers.items()}
        for run in runs.values():  # warm-up
            run()
        times = {name: [] for name in runs}
        names = list(runs)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                times[name].append(timed(runs[name], "cpu")[0])
        rows = []
        reference = probabilities["fp32"][:, column]
        for name, proba in probabilities.items():
            difference = np.abs(proba[:, column] - reference)
            rows.append(dict(
                variant=name, roc_auc=float(roc_auc_score(y_match, proba[:, column])),
                max_abs_diff=float(difference.max()), mean_abs_diff=float(difference.mean()),
                images_per_s=(len(images) / median(times[name]) if name in times else ""),
                size_mb=size_mb(files[name]) if name in files else ""))
    print(f"\n## {clf.model_name} at {size} px: accuracy on {len(X)} pairs, and images/s of "
          f"the network on {len(images)} decoded images (batch {args.batch_size}, median of "
          f"{args.repeats}); differences to the float32 ONNX file's probabilities\n")
    print(format_table(rows, [("variant", "file", ""), ("roc_auc", "ROC AUC", ".4f"),
                              ("max_abs_diff", "max |p - p_fp32|", ".4f"),
                              ("mean_abs_diff", "mean |p - p_fp32|", ".5f"),
                              ("images_per_s", "images/s", ".1f"), ("size_mb", "MB", ".2f")]))
    print("\n" + json.dumps(dict(model=args.model, pairs=args.pairs,
                                 calibration=args.calibration or args.pairs,
                                 n_calibration=len(calibration), image_size=size,
                                 variants=rows, onnxruntime=onnxruntime.__version__,
                                 machine=describe_machine("cpu"))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the tiny test Swin, few images, one repeat")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS),
                        default=["swin_tiny", "small"])
    parser.add_argument("--n-images", type=int, default=None,
                        help="distinct photos (default: 32); with --model, distinct images of "
                             "--pairs timed (default: 128)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="each timing repeats its work until this long (0 with --quick)")
    parser.add_argument("--image-dir", default=None,
                        help="where the photos are written (default: a temporary folder)")
    parser.add_argument("--model", help="a fitted classifier (pickle or model file): "
                                         "measure its float32 and int8 files instead")
    parser.add_argument("--pairs", help="with --model: the pairs CSV that the files score")
    parser.add_argument("--calibration", help="with --model: the pairs CSV whose images "
                                              "calibrate static int8 (default: --pairs)")
    parser.add_argument("--n-calibration", type=int, default=64,
                        help="with --model: calibration images (default: %(default)s)")
    parser.add_argument("--variants", choices=["default", "all"], default="default",
                        help="with --model: the library's three files, or also the "
                             "alternatives of static int8")
    parser.add_argument("--threads", type=int, default=None,
                        help="with --model: onnxruntime's threads (default: its own)")
    args = parser.parse_args(argv)
    MIN_SECONDS["value"] = args.min_seconds
    if args.model:
        if not args.pairs:
            parser.error("--model needs --pairs")
        args.n_images = args.n_images or 128
        print(f"Machine: {describe_machine('cpu')}; onnxruntime {onnxruntime.__version__}")
        return bench_fitted(args)
    args.n_images = args.n_images or 32
    if args.quick:
        args.models, args.repeats, MIN_SECONDS["value"] = ["tiny"], 1, 0.0
    print(f"Machine: {describe_machine('cpu')}; onnxruntime {onnxruntime.__version__} "
          f"(CPUExecutionProvider, its default threads)")
    rows, sizes = [], []
    with tempfile.TemporaryDirectory() as temporary:
        paths = write_photos(args.image_dir or os.path.join(temporary, "photos"),
                             args.n_images)
        for name in args.models:
            model_rows, model_sizes = bench_model(name, args, paths, temporary)
            rows += model_rows
            sizes.append(model_sizes)
            print(f"... {name} done", flush=True)
    print(f"\n## 1-3. images/s on {args.n_images} distinct ~500x500 JPEGs, batch "
          f"{args.batch_size}, median of {args.repeats}; ratios against torch fp32\n")
    print(format_table(rows, [("model", "model", ""), ("size", "px", "d"),
                              ("engine", "engine", ""),
                              ("network", "network img/s", ".1f"),
                              ("network_ratio", "ratio", ".2f"),
                              ("transform", "transform img/s", ".1f"),
                              ("transform_ratio", "ratio", ".2f"),
                              ("cosine", "min cosine vs torch fp32", ".6f")]))
    print("\n## 4. file sizes (MB)\n")
    print(format_table(sizes, [("model", "model", ""), ("size", "px", "d"),
                               ("safetensors MB", "model file (safetensors)", ".2f"),
                               ("onnx fp32 MB", "ONNX fp32", ".2f"),
                               ("onnx int8 MB", "ONNX int8", ".2f"),
                               ("onnx int8 static MB", "ONNX int8 static", ".2f")]))
    print("\n" + json.dumps(dict(engines=rows, sizes=sizes,
                                 onnxruntime=onnxruntime.__version__,
                                 torch=torch.__version__)))


if __name__ == "__main__":
    main()
