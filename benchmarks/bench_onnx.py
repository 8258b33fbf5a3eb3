"""ONNX export: onnxruntime (float32 and int8) against PyTorch (float32 and bf16) on the CPU.

Writes deterministic ~500x500 JPEG photos to a temporary folder and, for each
model (swin_tiny at 224 px and the small Swin at 64 px of quality.py, random
weights: pretrained ones cannot be downloaded here), exports an
``ImageEmbedder`` to ONNX twice (float32, and int8 with dynamic quantisation)
and measures, side by side in one run on the same images:

1. the network alone: images/s of each engine on the photos decoded and
   resized once beforehand, as ``uint8`` batches (PyTorch: ``module.embed``,
   fp32 and bf16 autocast; onnxruntime: the exported graph, which scales and
   normalises inside);
2. end to end: images/s of ``ImageEmbedder.transform`` (fp32, bf16) and of
   ``OnnxImageMatcher.transform`` (fp32 and int8 files), decoding included;
3. the smallest cosine between each engine's embeddings and PyTorch fp32's;
4. the sizes of the model file (``save``, safetensors) and of both ONNX files.

Every figure is the median over ``--repeats`` runs; a ratio (against PyTorch
fp32) is the median of the ratios of each repeat, whose timings ran seconds
apart, in rotating order. The last line is a JSON object with every figure.

Usage::

    python benchmarks/bench_onnx.py                  # full run, about 10 minutes on 2 cores
    python benchmarks/bench_onnx.py --quick          # smoke run, tiny model, seconds
    python benchmarks/bench_onnx.py --models small --n-images 128 --repeats 5
"""

import argparse
import json
import os
import tempfile

import numpy as np
import onnxruntime
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

from sklearn_imgpair import ImageEmbedder
from sklearn_imgpair._images.pixels import read_pixels
from sklearn_imgpair._nn.device import autocast
from sklearn_imgpair.onnx import OnnxImageMatcher

ENGINES = ["torch fp32", "torch bf16", "onnxruntime fp32", "onnxruntime int8"]


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
                                           quantize="int8")}
    matchers = {"fp32": OnnxImageMatcher(files["onnx fp32"], batch_size=args.batch_size),
                "int8": OnnxImageMatcher(files["onnx int8"], batch_size=args.batch_size)}
    networks = {"torch fp32": torch_network(fp32.module_, "fp32"),
                "torch bf16": torch_network(fp32.module_, "bf16"),
                "onnxruntime fp32": onnx_network(matchers["fp32"]),
                "onnxruntime int8": onnx_network(matchers["int8"])}
    transforms = {"torch fp32": embedders["fp32"].transform,
                  "torch bf16": embedders["bf16"].transform,
                  "onnxruntime fp32": matchers["fp32"].transform,
                  "onnxruntime int8": matchers["int8"].transform}
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the tiny test Swin, few images, one repeat")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS),
                        default=["swin_tiny", "small"])
    parser.add_argument("--n-images", type=int, default=32, help="distinct photos")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="each timing repeats its work until this long (0 with --quick)")
    parser.add_argument("--image-dir", default=None,
                        help="where the photos are written (default: a temporary folder)")
    args = parser.parse_args(argv)
    MIN_SECONDS["value"] = args.min_seconds
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
                               ("onnx int8 MB", "ONNX int8", ".2f")]))
    print("\n" + json.dumps(dict(engines=rows, sizes=sizes,
                                 onnxruntime=onnxruntime.__version__,
                                 torch=torch.__version__)))


if __name__ == "__main__":
    main()
