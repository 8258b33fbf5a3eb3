"""Inference speed: ImageEmbedder.transform and predict_proba against the backbone's own limit.

Writes deterministic ~500x500 JPEG photos to a temporary folder and measures,
in one run and for each model (swin_tiny at 224 px and a small Swin at 64 px):

1. ``ImageEmbedder.transform`` throughput on distinct images (decoding,
   resizing, batching, normalising and the forward pass) divided by the raw
   backbone forward throughput on the same photos decoded, resized and
   normalised beforehand, already on the device, at the same batch size and
   precision;
2. ``predict_proba`` on pairs that reuse images (2 pairs per distinct image,
   as in the AutoMM tutorial's data) against embedding both sides of every
   pair (the same network, one forward per pair);
4. the bf16 against fp32 speed-up, and the smallest cosine between bf16 and
   fp32 embeddings of the same images;
6. ``predict_proba`` pairs/s on pairs where each image appears 3 times, at
   each precision, divided by the raw fp32 forward's images/s;
5. the peak resident memory of ``predict_proba`` on 10,000, 100,000 and
   1,000,000 pairs over the same 20,000 small images with the tiny test Swin,
   each size in a fresh subprocess: the resident memory before the call and
   its peak during the call (``VmRSS`` and ``VmHWM`` on Linux, the peak reset
   before the call; ``ru_maxrss`` where ``/proc`` is missing).

Every figure is the median over ``--repeats`` runs; a ratio is the median of the
ratios of each repeat, whose two timings ran seconds apart. The same script runs on a
CUDA GPU (``--device auto`` picks it when present).

Usage::

    python benchmarks/bench_inference.py                    # full run
    python benchmarks/bench_inference.py --quick            # smoke run, tiny model, seconds
    python benchmarks/bench_inference.py --models swin_tiny --precisions fp32 bf16 --repeats 5
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

import numpy as np
import torch
from _common import (
    MIN_SECONDS,
    MODELS,
    decoded_tensors,
    describe_machine,
    format_table,
    median,
    memory_mb,
    reset_peak_memory,
    reusing_pairs,
    timed,
    write_photos,
)

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier
from sklearn_imgpair._images.datasets import PairDataset
from sklearn_imgpair._nn.device import autocast, default_num_workers, resolve_device, to_device


def raw_forward(backbone, images, batch_size, precision, device):
    """The limit: the backbone alone on normalised float tensors already on the device."""
    with torch.inference_mode(), autocast(precision, device):
        for start in range(0, len(images), batch_size):
            backbone(images[start:start + batch_size])


def pretend_fitted(model, image_size, batch_size, device, precision, num_workers,
                   predict_batch_size="same"):
    """An untrained classifier that predicts (prediction speed does not depend on training).

    Its prediction embeds ``batch_size`` images at a time, or with
    ``predict_batch_size=None`` in the batches chosen for the device.
    """
    if predict_batch_size == "same":
        predict_batch_size = batch_size
    batches = ({} if predict_batch_size is None
               else {"iterator_valid__batch_size": predict_batch_size})
    clf = ImagePairClassifier(pretrained=False, batch_size=batch_size, device=device,
                              precision=precision, num_workers=num_workers,
                              **batches, **{**model, "image_size": image_size})
    clf.initialize()
    clf.classes_ = np.array([0, 1])
    return clf


def embed_every_pair(clf, pairs, num_workers):
    """The naive way: decode and embed both images of every pair."""
    dataset = PairDataset(pairs, image_size=clf.image_size_)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=clf.batch_size, num_workers=num_workers,
        pin_memory=torch.device(clf.device).type == "cuda")
    logits = []
    clf.module_.eval()
    with torch.inference_mode(), autocast(clf.precision, clf.device):
        for X, _ in loader:
            logits.append(clf.module_(**to_device(X, clf.device)).float().cpu())
    return torch.cat(logits).numpy()


def bench_model(name, args, paths, device):
    model = MODELS[name]
    size = model["image_size"]
    rows, vectors = [], {}
    for precision in args.precisions:
        for workers in args.workers:
            embedder = ImageEmbedder(pretrained=False, batch_size=args.batch_size,
                                     device=device, cache=False, precision=precision,
                                     num_workers=workers, **model).fit()
            backbone = embedder.module_.backbone
            images = decoded_tensors(paths, embedder.module_, size, device)
            raw_forward(backbone, images[:args.batch_size], args.batch_size, precision,
                        device)  # warm-up: allocations, kernels
            embedder.transform(paths[:args.batch_size])
            raw_times, transform_times = [], []
            for _ in range(args.repeats):
                raw_times.append(timed(lambda: raw_forward(
                    backbone, images, args.batch_size, precision, device), device)[0])
                seconds, result = timed(lambda: embedder.transform(paths), device)
                transform_times.append(seconds)
            vectors[precision] = result
            raw, transform = len(paths) / median(raw_times), len(paths) / median(transform_times)
            # The median of per-repeat ratios: each compares runs seconds apart, under
            # the same load.
            ratio = median([r / t for r, t in zip(raw_times, transform_times)])
            shown = (f"None ({default_num_workers(device)})" if workers is None
                     else str(workers))
            rows.append(dict(model=name, size=size, precision=precision, workers=shown,
                             raw=raw, transform=transform, ratio=ratio))
    pair_rows = []
    if not args.skip_pairs:
        n_pair_images = min(len(paths), args.n_pair_images)
        pairs = reusing_pairs(paths[:n_pair_images])
        precision = args.precisions[0]
        clf = pretend_fitted(model, size, args.batch_size, device, precision, None)
        workers = min(default_num_workers(device), max(len(pairs) // args.batch_size - 1, 0))
        clf.predict_proba(pairs[:args.batch_size])  # warm-up
        ours, naive = [], []
        for _ in range(args.repeats):
            ours.append(timed(lambda: clf.predict_proba(pairs), device)[0])
            naive.append(timed(lambda: embed_every_pair(clf, pairs, workers), device)[0])
        np.testing.assert_allclose(clf.decision_function(pairs),
                                   embed_every_pair(clf, pairs, workers), rtol=1e-2, atol=1e-2)
        pair_rows.append(dict(model=name, precision=precision, n_pairs=len(pairs),
                              n_images=n_pair_images,
                              ours=len(pairs) / median(ours),
                              naive=len(pairs) / median(naive),
                              speedup=median([n / o for n, o in zip(naive, ours)])))
    if not args.skip_pairs:
        # 6. predict_proba on tutorial-like pairs (each image in 3 pairs) at every
        # precision, against the raw fp32 forward's images/s.
        pairs = reusing_pairs(paths[:n_pair_images], pairs_per_image=3, seed=1)
        raw_fp32 = next(row["raw"] for row in rows if row["precision"] == "fp32")
        for precision in args.precisions:
            clf = pretend_fitted(model, size, args.batch_size, device, precision, None)
            clf.predict_proba(pairs[:args.batch_size])  # warm-up
            seconds = median([timed(lambda: clf.predict_proba(pairs), device)[0]
                              for _ in range(args.repeats)])
            pair_rows.append(dict(model=name, precision=precision, n_pairs=len(pairs),
                                  n_images=n_pair_images, ours=len(pairs) / seconds,
                                  per_raw_fp32=len(pairs) / seconds / raw_fp32))
    agreement = None
    if "fp32" in vectors and "bf16" in vectors:
        agreement = float((vectors["fp32"] * vectors["bf16"]).sum(axis=1).min())
    return rows, pair_rows, agreement


def memory_child(args):
    """Run in a subprocess: predict_proba on n pairs over the images in a folder, print RSS."""
    paths = np.array(sorted(os.path.join(args.memory_dir, name)
                            for name in os.listdir(args.memory_dir)), dtype=object)
    # Every image once (as far as the pairs go), then random pairs: from 10,000
    # pairs over 20,000 images up, every size covers the same distinct images,
    # so that growth is that of the pairs alone.
    rng = np.random.default_rng(0)
    covering = paths[rng.permutation(len(paths))[:len(paths) // 2 * 2]].reshape(-1, 2)
    extra = paths[rng.integers(0, len(paths), size=(max(args.memory_child - len(covering), 0), 2))]
    pairs = np.concatenate([covering, extra])[:args.memory_child]
    clf = pretend_fitted(MODELS["tiny"], 32, 256, "cpu", "fp32", 0)
    # The process's peak so far is that of importing torch (and ru_maxrss can even
    # hold the parent's, inherited through fork): measure the call's own peak.
    before, _ = memory_mb()
    reset = reset_peak_memory()
    proba = clf.predict_proba(pairs)
    _, peak = memory_mb()
    print(json.dumps(dict(n_pairs=len(pairs), n_images=len(np.unique(pairs)),
                          rss_before_mb=before, rss_peak_mb=peak, peak_of_call=reset,
                          ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          n_proba=len(proba))))


def bench_memory(args, folder):
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    for index in range(args.memory_images):
        path = os.path.join(folder, f"small_{index:06d}.jpg")
        if not os.path.exists(path):
            pixels = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((48, 48), Image.Resampling.BILINEAR).save(path)
    results = []
    for n_pairs in args.memory_pairs:
        output = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--memory-child", str(n_pairs),
             "--memory-dir", folder], check=True, capture_output=True, text=True)
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the tiny test Swin, few images, one repeat")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS),
                        default=["swin_tiny", "small"])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16", "fp16"],
                        default=None, help="default: fp32 bf16 (fp32 fp16 bf16 on CUDA)")
    parser.add_argument("--workers", nargs="+", default=None,
                        help="num_workers values to compare; 'None' is the default sizing "
                             "(default: None 1 on CPU, None on CUDA)")
    parser.add_argument("--n-images", type=int, default=None,
                        help="distinct photos (default 128 on CPU, 2048 on CUDA)")
    parser.add_argument("--n-pair-images", type=int, default=None,
                        help="distinct photos behind the pairs of ratio 2 (default 96 on "
                             "CPU, 2048 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="each timing repeats its work until this long (0 with --quick)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-dir", default=None,
                        help="where the photos are written (default: a temporary folder)")
    parser.add_argument("--memory-images", type=int, default=20_000)
    parser.add_argument("--memory-pairs", type=int, nargs="+",
                        default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--skip-pairs", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        return memory_child(args)
    device = resolve_device(args.device)
    MIN_SECONDS["value"] = args.min_seconds
    cuda = torch.device(device).type == "cuda"
    if args.quick:
        args.models, args.repeats, MIN_SECONDS["value"] = ["tiny"], 1, 0.0
        args.n_images = args.n_images or 64
        args.n_pair_images = args.n_pair_images or 64
        args.memory_images = min(args.memory_images, 600)
        args.memory_pairs = [300, 3000]
        args.precisions = args.precisions or ["fp32", "bf16"]
        args.workers = args.workers or ["None", "1"]
    args.n_images = args.n_images or (2048 if cuda else 128)
    args.n_pair_images = args.n_pair_images or (2048 if cuda else 96)
    args.precisions = args.precisions or (["fp32", "fp16", "bf16"] if cuda else ["fp32", "bf16"])
    args.workers = [None if w == "None" else int(w)
                    for w in (args.workers or (["None"] if cuda else ["None", "1"]))]

    print(f"Machine: {describe_machine(device)}; device {device}")
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.image_dir or os.path.join(temporary, "photos")
        paths = write_photos(folder, max(args.n_images, args.n_pair_images))
        rows, pair_rows, agreements = [], [], {}
        for name in args.models:
            model_rows, model_pairs, agreement = bench_model(
                name, args, paths[:args.n_images], device)
            rows += model_rows
            pair_rows += model_pairs
            agreements[name] = agreement
            print(f"... {name} done", flush=True)
        memory = None if args.skip_memory else bench_memory(
            args, os.path.join(temporary, "small"))

    print(f"\n## 1. transform against the raw forward ({args.n_images} distinct ~500x500 "
          f"JPEGs, batch {args.batch_size}, median of {args.repeats})\n")
    print(format_table(rows, [("model", "model", ""), ("size", "px", "d"),
                              ("precision", "precision", ""), ("workers", "num_workers", ""),
                              ("raw", "raw forward img/s", ".1f"),
                              ("transform", "transform img/s", ".1f"),
                              ("ratio", "ratio 1", ".3f")]))
    per_raw = [row for row in pair_rows if "per_raw_fp32" in row]
    pair_rows = [row for row in pair_rows if "per_raw_fp32" not in row]
    if pair_rows:
        print("\n## 2. predict_proba on pairs reusing images against embedding every pair\n")
        print(format_table(pair_rows, [("model", "model", ""), ("precision", "precision", ""),
                                       ("n_pairs", "pairs", "d"), ("n_images", "images", "d"),
                                       ("ours", "predict_proba pairs/s", ".1f"),
                                       ("naive", "every pair pairs/s", ".1f"),
                                       ("speedup", "ratio 2", ".2f")]))
    if per_raw:
        print("\n## 6. predict_proba on pairs where each image is in 3 pairs, against the raw "
              "fp32 forward's images/s\n")
        print(format_table(per_raw, [("model", "model", ""), ("precision", "precision", ""),
                                     ("n_pairs", "pairs", "d"), ("n_images", "images", "d"),
                                     ("ours", "predict_proba pairs/s", ".1f"),
                                     ("per_raw_fp32", "ratio 6", ".2f")]))
    print("\n## 4. bf16 against fp32\n")
    speed = []
    for name in args.models:
        by_precision = {row["precision"]: row for row in rows
                        if row["model"] == name and row["workers"].startswith("None")}
        if "fp32" in by_precision and "bf16" in by_precision:
            speed.append(dict(model=name,
                              raw=by_precision["bf16"]["raw"] / by_precision["fp32"]["raw"],
                              transform=(by_precision["bf16"]["transform"]
                                         / by_precision["fp32"]["transform"]),
                              cosine=agreements[name]))
    print(format_table(speed, [("model", "model", ""), ("raw", "raw speed-up", ".2f"),
                               ("transform", "transform speed-up", ".2f"),
                               ("cosine", "min cosine bf16 vs fp32", ".6f")]))
    if memory:
        print(f"\n## 5. peak resident memory of predict_proba (tiny Swin, "
              f"{args.memory_images} small images, a fresh process per size)\n")
        for row in memory:
            row["added_mb"] = row["rss_peak_mb"] - row["rss_before_mb"]
        print(format_table(memory, [
            ("n_pairs", "pairs", "d"), ("n_images", "distinct images", "d"),
            ("rss_before_mb", "RSS before the call (MB)", ".1f"),
            ("rss_peak_mb", "peak RSS during the call (MB)", ".1f"),
            ("added_mb", "peak - before (MB)", ".1f")]))
        if not memory[0]["peak_of_call"]:
            print("\n(The peak could not be reset: peak RSS is that of the whole process.)")
        print()
        for row in memory[1:]:
            growth = row["rss_peak_mb"] - memory[0]["rss_peak_mb"]
            extra = row["n_pairs"] - memory[0]["n_pairs"]
            print(f"Peak growth from {memory[0]['n_pairs']} to {row['n_pairs']} pairs: "
                  f"{growth:+.1f} MB ({growth * 2**20 / extra:+.0f} bytes per extra pair).")
    summary = dict(device=device, transform=rows, pairs=pair_rows, pairs_per_raw=per_raw,
                   precision=speed, memory=memory)
    print("\n" + json.dumps(summary))


if __name__ == "__main__":
    main()
