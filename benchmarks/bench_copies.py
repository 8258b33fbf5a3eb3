"""The cost of ``dedup``'s exact-copy passes: hashing bytes, and decoding to hash pixels.

``dedup`` looks for exact copies before the network: files with the same bytes (a hash of the
bytes of files of one size), then, among the files whose bytes differ, files with the same
decoded pixels (each file whose header gives the same size as another's is decoded once, at
full scale, and its pixels hashed). The pixel pass decodes every image of a folder whose images
all have one size: the worst case, and this benchmark's. Figures, side by side in one run:

- ``bytes_s``: ``exact_copies(paths, pixels=False)``, the byte pass alone;
- ``pixels_s``: ``exact_copies(paths)``, both passes; ``pixel_pass_s`` their difference;
- ``dedup_s``: the whole ``sklearn-imgpair dedup`` command (both passes, embedding, groups)
  with the demo's small Swin (``DEMO_SWIN``, 64 px, fitted for one epoch on a few pairs);
- ``share``: ``pixel_pass_s / dedup_s``.

Folders: ``demo``, the demo's data set (32 products x 6 views, 192 PNGs of 64 px), and
``photos``, as many 500 px JPEG photos (decoded at full scale by the pixel pass, but at a
reduced scale, PIL's draft mode, for the network's 64 px).

Usage::

    python benchmarks/bench_copies.py             # about a minute on 2 cores
    python benchmarks/bench_copies.py --quick     # the tiny Swin, 24 images

The last line is the figures as JSON.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

import torch
from _common import format_table, median, write_photos

from sklearn_imgpair import ImagePairClassifier
from sklearn_imgpair.__main__ import main as cli
from sklearn_imgpair._cli.copies import exact_copies
from sklearn_imgpair._cli.demo import DEMO_SWIN
from sklearn_imgpair.datasets import make_image_pairs


def _model(folder, pairs, quick):
    """A small model file: the demo's Swin (or the tiny test Swin) after one epoch."""
    kwargs = (dict(patch_size=2, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2))
              if quick else DEMO_SWIN)
    clf = ImagePairClassifier(pretrained=False, model_kwargs=kwargs,
                              image_size=32 if quick else 64, max_epochs=1, batch_size=16,
                              random_state=0)
    X = pairs[["Image1", "Image2"]].to_numpy(dtype=object)[:32]
    clf.fit(X, pairs["Label"].to_numpy()[:32])
    path = os.path.join(folder, "model.safetensors")
    clf.save(path)
    return path


def _timed(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return median(times)


def _measure(name, image_folder, paths, model_path, repeats, work):
    bytes_s = _timed(lambda: exact_copies(paths, pixels=False), repeats)
    pixels_s = _timed(lambda: exact_copies(paths), repeats)
    output = os.path.join(work, f"{name}.csv")
    arguments = ["dedup", "--model", model_path, "--images", image_folder, "--output", output,
                 "--quiet"]
    with contextlib.redirect_stdout(io.StringIO()):
        dedup_s = _timed(lambda: cli(arguments), repeats)
    pixel_pass_s = max(pixels_s - bytes_s, 0.0)
    return dict(folder=name, n_images=len(paths), bytes_s=bytes_s, pixels_s=pixels_s,
                pixel_pass_s=pixel_pass_s, dedup_s=dedup_s, share=pixel_pass_s / dedup_s)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the tiny Swin and 24 images: a smoke test")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median")
    parser.add_argument("--work-dir", help="folder for the images and model (default: a "
                                           "temporary one)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work_dir or temporary
        n_products, n_views = (4, 6) if args.quick else (32, 6)
        demo = os.path.join(work, "demo")
        train, _ = make_image_pairs(demo, n_products=n_products, n_views=n_views,
                                    image_size=32 if args.quick else 64, n_pairs=64,
                                    random_state=0)
        model_path = _model(work, train, args.quick)
        demo_paths = sorted(os.path.join(root, name) for root, _, names in os.walk(demo)
                            for name in names if name.endswith(".png"))
        photos = os.path.join(work, "photos")
        photo_paths = list(write_photos(photos, len(demo_paths), size=500))
        rows = [_measure("demo", demo, demo_paths, model_path, args.repeats, work),
                _measure("photos", photos, photo_paths, model_path, args.repeats, work)]
    print(format_table(rows, [("folder", "folder", ""), ("n_images", "images", "d"),
                              ("bytes_s", "bytes (s)", ".3f"), ("pixels_s", "both (s)", ".3f"),
                              ("pixel_pass_s", "pixel pass (s)", ".3f"),
                              ("dedup_s", "dedup (s)", ".2f"), ("share", "share", ".1%")]))
    print(json.dumps({"copies": [{key: (round(value, 4) if isinstance(value, float) else value)
                                  for key, value in row.items()} for row in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
