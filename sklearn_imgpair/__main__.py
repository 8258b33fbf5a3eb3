"""Command line: ``python -m sklearn_imgpair demo`` runs the offline end-to-end demo."""

import argparse
import os
import pickle
import sys
import tempfile
import time

__all__ = ["main"]

# A small Swin that trains from random weights in minutes on two CPU cores.
DEMO_SWIN = dict(patch_size=4, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4))


def _demo(args):
    from sklearn_imgpair import ImagePairClassifier
    from sklearn_imgpair.datasets import make_image_pairs

    output = os.path.abspath(args.output or tempfile.mkdtemp(prefix="sklearn-imgpair-demo-"))
    image_dir = os.path.join(output, "images")
    print(f"1. Drawing a synthetic product-matching data set into {image_dir}")
    train, test = make_image_pairs(image_dir, n_products=32, n_views=6, image_size=64,
                                   n_pairs=800, random_state=args.seed)
    print(f"   {len(train)} training pairs, {len(test)} test pairs of unseen products "
          f"({int(test['Label'].sum())} matching).")

    print(f"2. Fitting a Siamese Swin from random weights (time_limit={args.time_limit:g} s)")
    clf = ImagePairClassifier(
        pretrained=False, model_kwargs=DEMO_SWIN, image_size=64, lr=2e-3, batch_size=32,
        max_epochs=100, time_limit=args.time_limit, random_state=args.seed, verbose=1,
        callbacks__early_stopping__patience=20,  # the learning rate decays over the budget
    )
    started = time.perf_counter()
    clf.fit(train[["Image1", "Image2"]], train["Label"])
    print(f"   fitted in {time.perf_counter() - started:.1f} s, {len(clf.history)} epochs")

    X_test, y_test = test[["Image1", "Image2"]], test["Label"].to_numpy()
    proba = clf.predict_proba(X_test)[:, 1]
    predictions = clf.predict(X_test)
    print("3. Evaluating on the test pairs")
    print(f"   ROC AUC  {clf.score(X_test, y_test):.4f}  (clf.score)")
    print(f"   accuracy {(predictions == y_test).mean():.4f}  (clf.predict, threshold 0.5)")
    print("   first pairs:  label  predicted  P(match)")
    for index in range(5):
        print(f"      pair {index}:     {y_test[index]}        {predictions[index]}      "
              f"{proba[index]:.3f}")

    model_path = os.path.join(output, "model.pkl")
    with open(model_path, "wb") as file:
        pickle.dump(clf, file)
    print(f"4. Saved the fitted classifier to {model_path}")
    print(f"   reload it with: pickle.load(open({model_path!r}, 'rb'))")
    return 0


def main(argv=None):
    """Run the ``sklearn-imgpair`` command line."""
    parser = argparse.ArgumentParser(
        prog="sklearn-imgpair",
        description="Image-to-image matching with Siamese Swin Transformers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="fit and evaluate a matcher on synthetic data, offline",
        description="Draw a synthetic product-matching data set, fit a small Siamese Swin "
                    "from random weights, evaluate it and save it. Needs no network.")
    demo.add_argument("--output", help="folder for images and model (default: a new temp folder)")
    demo.add_argument("--time-limit", type=float, default=90.0,
                      help="seconds for fitting (default: 90)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
