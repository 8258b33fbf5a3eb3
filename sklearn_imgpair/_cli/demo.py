"""The ``demo`` subcommand: synthetic data, a small Swin from scratch, a saved model."""

import json
import os
import shlex
import tempfile
import time

from sklearn_imgpair._cli.networks import check_device_option, check_precision_option
from sklearn_imgpair._cli.parser import PROG
from sklearn_imgpair.datasets import make_image_pairs

__all__ = ["DEMO_SWIN", "run_demo", "shell_commands"]

# A small Swin that trains from random weights in minutes on two CPU cores.
DEMO_SWIN = dict(patch_size=4, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4))
# The demo's images: side in pixels, and the settings of its fit that the command line has.
_IMAGE_SIZE = 64
_LEARNING_RATE = 2e-3
_BATCH_SIZE = 32


def _write_pairs(frame, folder, name):
    """Write ``frame`` to ``folder/name`` with image paths relative to ``folder``."""
    frame = frame.copy()
    for column in ("Image1", "Image2"):
        frame[column] = [os.path.relpath(path, folder) for path in frame[column]]
    path = os.path.join(folder, name)
    frame.to_csv(path, index=False)
    return path


def shell_commands(*, time_limit, random_state):
    """The commands that the demo suggests, each as a list of arguments after the program.

    Run in the demo's folder, they read the files the demo wrote (its pairs
    CSVs, images and model) and write theirs beside them; ``fit`` trains
    the demo's small Swin with its settings.

    Parameters
    ----------
    time_limit : float
        The demo's ``--time-limit``.
    random_state : int
        The demo's ``--random-state``.

    Returns
    -------
    commands : list of list of str
    """
    model = ["--model", "model.safetensors"]
    return [
        ["evaluate", *model, "--data", "test.csv"],
        ["predict", *model, "--data", "test.csv", "--output", "predictions.csv"],
        ["embed", *model, "--images", "images", "--output", "embeddings.npy"],
        ["search", *model, "--gallery", "images", "--query", "test.csv", "--image-column",
         "Image1", "--n-neighbors", "5", "--output", "results.csv"],
        ["fit", "--train", "train.csv", "--model", "model_from_shell.safetensors",
         "--no-pretrained", "--image-size", str(_IMAGE_SIZE), "--model-kwargs",
         json.dumps(DEMO_SWIN), "--lr", f"{_LEARNING_RATE:g}", "--batch-size", str(_BATCH_SIZE),
         "--time-limit", f"{time_limit:g}", "--random-state", str(random_state)],
    ]


def run_demo(args):
    """``demo``: synthetic data, a small Swin from scratch, evaluation, a saved model."""
    from sklearn_imgpair import ImageEmbedder, ImagePairClassifier

    device = "auto" if args.device is None else args.device
    precision = "auto" if args.precision is None else args.precision
    check_device_option(device)  # before any work
    check_precision_option(precision, device)
    output = os.path.abspath(args.output or tempfile.mkdtemp(prefix="sklearn-imgpair-demo-"))
    image_dir = os.path.join(output, "images")
    print(f"1. Drawing a synthetic product-matching data set into {image_dir}")
    train, test = make_image_pairs(image_dir, n_products=32, n_views=6, image_size=_IMAGE_SIZE,
                                   n_pairs=800, random_state=args.random_state)
    train_path = _write_pairs(train, output, "train.csv")
    test_path = _write_pairs(test, output, "test.csv")
    print(f"   {len(train)} training pairs, {len(test)} test pairs of unseen products "
          f"({int(test['Label'].sum())} matching), written to {train_path} and {test_path}.")

    print(f"2. Fitting a Siamese Swin from random weights (time_limit={args.time_limit:g} s)")
    clf = ImagePairClassifier(
        pretrained=False, model_kwargs=DEMO_SWIN, image_size=_IMAGE_SIZE, lr=_LEARNING_RATE,
        batch_size=_BATCH_SIZE, max_epochs=100, time_limit=args.time_limit,
        random_state=args.random_state, device=device, precision=precision, verbose=1,
        callbacks__early_stopping__patience=20,  # the learning rate decays over the budget
    )
    started = time.perf_counter()
    # By position, as the fit command does: the model then takes any two columns, no warning.
    clf.fit(train[["Image1", "Image2"]].to_numpy(dtype=object), train["Label"])
    print(f"   fitted in {time.perf_counter() - started:.1f} s, {len(clf.history)} epochs")

    X_test, y_test = test[["Image1", "Image2"]].to_numpy(dtype=object), test["Label"].to_numpy()
    proba = clf.predict_proba(X_test)[:, 1]
    predictions = clf.predict(X_test)
    print("3. Evaluating on the test pairs")
    print(f"   ROC AUC  {clf.score(X_test, y_test):.4f}  (clf.score)")
    print(f"   accuracy {(predictions == y_test).mean():.4f}  (clf.predict, threshold 0.5)")
    print("   first pairs:  label  predicted  P(match)")
    for index in range(5):
        print(f"      pair {index}:     {y_test[index]}        {predictions[index]}      "
              f"{proba[index]:.3f}")
    embedder = ImageEmbedder(classifier=clf, device=device, precision=precision).fit()
    embeddings = embedder.transform(test["Image1"])
    print(f"   embeddings of the test pairs' first images: shape {embeddings.shape}  "
          "(ImageEmbedder(classifier=clf))")

    model_path = clf.save(os.path.join(output, "model.safetensors"))
    print(f"4. Saved the fitted classifier to {model_path}")
    print(f"   reload it with: ImagePairClassifier.load({model_path!r})")
    print("5. The same from the shell, on the files above: evaluate and predict the test "
          "pairs,\n   embed every image, find the test pairs' first images among all images, "
          "and fit\n   the same small Swin:")
    print(f"   cd {shlex.quote(output)}")
    for command in shell_commands(time_limit=args.time_limit, random_state=args.random_state):
        print(f"   {shlex.join([PROG, *command])}")
    return 0
