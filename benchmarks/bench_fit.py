"""Training speed: ImagePairClassifier.fit against the backbone's own forward and backward.

Writes deterministic ~500x500 JPEG photos to a temporary folder, draws pairs
that reuse each photo twice (as the AutoMM tutorial's data does) and measures,
in one run and for each model (swin_tiny at 224 px and a small Swin at 64 px):

3. ``fit`` throughput, images per second over one epoch (two per pair),
   divided by the raw forward and backward pass of the backbone on the same
   photos decoded, resized and normalised beforehand, already on the device,
   in batches of the same size (two images per pair). ``fit`` is timed whole: building the
   network, decoding every image once into the cache, on-device
   augmentation, the head and the loss. The ratio is measured with
   ``pair_mining="none"`` and no validation split, so that both sides pass
   the same images through the backbone; the default configuration (identity
   mining, which adds half as many images again, and a validation split) is
   listed beside it in pairs per second;
   the frozen-backbone fast path (``freeze_backbone=True``, 10 epochs) too.

Every figure is the median over ``--repeats`` runs; the ratio is the median of
the ratios of each repeat, whose two timings ran seconds apart. The same script runs on a
CUDA GPU (``--device auto`` picks it when present).

Usage::

    python benchmarks/bench_fit.py                      # full run
    python benchmarks/bench_fit.py --quick              # smoke run, tiny model, seconds
    python benchmarks/bench_fit.py --models swin_tiny --precisions fp32 bf16 --repeats 5
"""

import argparse
import json
import os
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
    reusing_pairs,
    timed,
    write_photos,
)

from sklearn_imgpair import ImagePairClassifier
from sklearn_imgpair._nn.device import autocast, resolve_device


def raw_forward_backward(backbone, images, batch_size, precision):
    """The limit: forward and backward of the backbone alone, in training mode."""
    backbone.train()
    for start in range(0, len(images), batch_size):
        with autocast(precision, images.device):
            features = backbone(images[start:start + batch_size])
        features.float().square().mean().backward()
        backbone.zero_grad(set_to_none=True)


def make_classifier(model, args, device, precision, **params):
    params = {"max_epochs": 1, **params}
    return ImagePairClassifier(pretrained=False, batch_size=args.batch_size, device=device,
                               precision=precision, random_state=0, lr=1e-3, **model,
                               **params)


def bench_model(name, args, pairs, y, device):
    model = MODELS[name]
    size = model["image_size"]
    n_images = 2 * len(pairs)
    rows = []
    for precision in args.precisions:
        plain = dict(pair_mining="none", train_split=None)
        module = make_classifier(model, args, device, precision).initialize().module_
        backbone = module.backbone
        distinct, inverse = np.unique(pairs.ravel(), return_inverse=True)
        images = decoded_tensors(distinct, module, size, device)[torch.as_tensor(inverse)]
        raw_forward_backward(backbone, images[:2 * args.batch_size], 2 * args.batch_size,
                             precision)  # warm-up
        make_classifier(model, args, device, precision, **plain).fit(pairs[:4], y[:4])
        raw_times, fit_times, epoch_times, default_times, frozen_times = [], [], [], [], []
        for _ in range(args.repeats):
            raw_times.append(timed(lambda: raw_forward_backward(
                backbone, images, 2 * args.batch_size, precision), device)[0])
            seconds, clf = timed(lambda: make_classifier(
                model, args, device, precision, **plain).fit(pairs, y), device)
            fit_times.append(seconds)
            epoch_times.append(clf.history[-1, "dur"])
            if not args.skip_default:
                default_times.append(timed(lambda: make_classifier(
                    model, args, device, precision).fit(pairs, y), device)[0])
            frozen_times.append(timed(lambda: make_classifier(
                model, args, device, precision, freeze_backbone=True,
                max_epochs=args.frozen_epochs).fit(pairs, y), device)[0])
        raw = n_images / median(raw_times)
        fit = n_images / median(fit_times)
        rows.append(dict(model=name, size=size, precision=precision, n_pairs=len(pairs),
                         raw=raw, fit=fit, epoch=n_images / median(epoch_times),
                         ratio=median([r / f for r, f in zip(raw_times, fit_times)]),
                         default=(len(pairs) / median(default_times) if default_times
                                  else ""),
                         fit_s=median(fit_times), frozen_s=median(frozen_times)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the tiny test Swin, few images, one repeat")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS),
                        default=["swin_tiny", "small"])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16", "fp16"],
                        default=["fp32"])
    parser.add_argument("--n-images", type=int, default=None,
                        help="distinct photos, as many pairs (default 64 on CPU, 2048 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per batch")
    parser.add_argument("--frozen-epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="each timing repeats its work until this long (0 with --quick)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-dir", default=None,
                        help="where the photos are written (default: a temporary folder)")
    parser.add_argument("--skip-default", action="store_true",
                        help="do not time the default configuration (mining, validation)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    MIN_SECONDS["value"] = args.min_seconds
    if args.quick:
        args.models, args.repeats, MIN_SECONDS["value"] = ["tiny"], 1, 0.0
        args.n_images = args.n_images or 64
    args.n_images = args.n_images or (2048 if torch.device(device).type == "cuda" else 64)

    print(f"Machine: {describe_machine(device)}; device {device}")
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.image_dir or os.path.join(temporary, "photos")
        paths = write_photos(folder, args.n_images)
        pairs = reusing_pairs(paths)
        y = np.random.default_rng(0).integers(0, 2, size=len(pairs))
        y[:2] = [0, 1]
        rows = []
        for name in args.models:
            rows += bench_model(name, args, pairs, y, device)
            print(f"... {name} done", flush=True)

    print(f"\n## 3. fit (one epoch) against the raw forward and backward ({len(pairs)} pairs "
          f"over {args.n_images} ~500x500 JPEGs, batch {args.batch_size} pairs, median of "
          f"{args.repeats})\n")
    print(format_table(rows, [("model", "model", ""), ("size", "px", "d"),
                              ("precision", "precision", ""),
                              ("raw", "raw fwd+bwd img/s", ".1f"),
                              ("fit", "fit img/s", ".1f"), ("ratio", "ratio 3", ".3f"),
                              ("epoch", "epoch alone img/s", ".1f"),
                              ("default", "default fit pairs/s", ".1f"),
                              ("fit_s", "fit s", ".1f"),
                              ("frozen_s", f"freeze_backbone, {args.frozen_epochs} epochs, s",
                               ".1f")]))
    print("\n" + json.dumps(dict(device=device, fit=rows)))


if __name__ == "__main__":
    main()
