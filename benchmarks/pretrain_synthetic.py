"""Pre-train quality.py's small Swin on synthetic products, then save its backbone.

Draws ``--products`` synthetic products (``datasets.make_image_pairs``: a body
with a few coloured shapes, each view with another pose, scale, lighting and
background), fits :class:`ImagePairClassifier` on them with quality.py's
settings for ``--time-budget`` seconds, prints ROC AUC on held-out synthetic
products and writes the backbone's weights to ``--output`` (safetensors), for
``quality.py --weights-path`` (or any ``ImagePairClassifier(weights_path=...)``
with the same ``model_kwargs``). Everything is made offline by the package's
own generator. The last line is JSON.

Usage::

    python benchmarks/pretrain_synthetic.py --products 2000 --time-budget 600 \\
        --output synthetic_small_swin.safetensors
"""

import argparse
import json
import tempfile
import time

from quality import add_fit_arguments, fit_config, make_classifier
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score

from sklearn_imgpair.datasets import make_image_pairs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--output", required=True, help="backbone weights (.safetensors)")
    parser.add_argument("--data-dir", help="where the images go (default: a temporary folder)")
    add_fit_arguments(parser)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        train, test = make_image_pairs(args.data_dir or scratch, n_products=args.products,
                                       n_views=args.views, image_size=args.image_size,
                                       n_pairs=args.pairs, test_size=0.05,
                                       random_state=args.seed)
        draw_seconds = time.perf_counter() - started
        print(f"drew {args.products} products x {args.views} views in {draw_seconds:.1f} s: "
              f"{len(train)} training pairs, {len(test)} test pairs")
        clf = make_classifier(args)
        started = time.perf_counter()
        clf.fit(train[["Image1", "Image2"]], train["Label"])
        fit_seconds = time.perf_counter() - started
        auc = roc_auc_score(test["Label"], clf.predict_proba(test[["Image1", "Image2"]])[:, 1])
    weights = {name: (value.float() if value.is_floating_point() else value).contiguous().cpu()
               for name, value in clf.module_.backbone.state_dict().items()}
    save_file(weights, args.output)
    print(f"fit {fit_seconds:.0f} s, {len(clf.history)} epochs; ROC AUC on unseen synthetic "
          f"products {auc:.4f}; backbone written to {args.output}")
    print(json.dumps({"config": fit_config(args, clf), "products": args.products,
                      "views": args.views, "fit_s": round(fit_seconds, 1),
                      "epochs": len(clf.history), "synthetic_test_auc": auc,
                      "output": args.output}))


if __name__ == "__main__":
    main()
