"""The arguments of the commands on pairs CSV files: ``fit``, ``evaluate`` and ``predict``.

Only the standard library is imported here, as in :mod:`~sklearn_imgpair._cli.parser`.
"""

import argparse

from sklearn_imgpair._cli.options import (
    MODEL_HELP,
    PROGRESS,
    Formatter,
    add_random_state,
    describe,
    error_options,
    json_object,
    output_options,
    positive,
    probability,
    runtime_options,
    share,
)

__all__ = ["add_evaluate", "add_fit", "add_predict"]


def _column_options(*, label):
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("columns")
    group.add_argument("--image1", default="Image1", metavar="COLUMN",
                       help="column of the first images (default: %(default)s)")
    group.add_argument("--image2", default="Image2", metavar="COLUMN",
                       help="column of the second images (default: %(default)s)")
    if label:
        group.add_argument("--label", default="Label", metavar="COLUMN",
                           help="column of the labels (default: %(default)s)")
    return parent


def _model_options():
    """The options of the commands that score pairs: the model, the pairs, the batch size."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--model", required=True, metavar="PATH", help=MODEL_HELP)
    parent.add_argument("--data", required=True, metavar="CSV", help="pairs CSV file")
    parent.add_argument("--batch-size", type=positive(int), metavar="N",
                        help="images per forward pass (default: chosen for the device and "
                             "the image size)")
    return parent


def add_fit(commands):
    fit = commands.add_parser(
        "fit", formatter_class=Formatter,
        parents=[_column_options(label=True),
                 output_options("also show a progress bar per epoch"),
                 error_options("leave their pairs out of training"),
                 runtime_options(default_device="auto", default_precision="auto")],
        help="fit a matcher on a pairs CSV and save it",
        description=describe(
            "Fit a Siamese matcher on the labelled pairs of a CSV file and save it as one "
            "safetensors file (weights, plus the settings as JSON; no pickle). 10 % of "
            "the pairs are held out to pick the best epoch; a row per epoch "
            "shows the progress. Pretrained weights need the network once (or "
            "--weights-path); --no-pretrained starts from random weights (use --lr 2e-3 "
            "then).",
            "sklearn-imgpair fit --train train.csv --model model.safetensors --time-limit 180"))
    fit.add_argument("--train", required=True, metavar="CSV", help="training pairs CSV file")
    fit.add_argument("--model", required=True, metavar="PATH",
                     help="where to save the fitted model (.safetensors; an existing file is "
                          "replaced only once the new one is complete)")
    fit.add_argument("--match-label", default="1", metavar="LABEL",
                     help="the label that means 'same' (default: %(default)s)")
    model = fit.add_argument_group("model")
    model.add_argument("--model-name", default="swin_tiny_patch4_window7_224", metavar="NAME",
                       help="timm backbone (default: %(default)s)")
    model.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                       help="start from the backbone's pretrained weights (default: yes)")
    model.add_argument("--weights-path", metavar="PATH",
                       help="local .pth/.bin/.safetensors checkpoint of the backbone")
    model.add_argument("--model-kwargs", type=json_object, metavar="JSON",
                       help="JSON object of timm.create_model arguments, e.g. "
                            "'{\"embed_dim\": 32, \"depths\": [2, 2], \"num_heads\": [2, 4]}'")
    model.add_argument("--image-size", type=positive(int), metavar="PIXELS",
                       help="side length images are resized to (default: the model's, 224)")
    model.add_argument("--colour-share", type=share, default=0.0, metavar="W",
                       help="weight of the images' colour histograms in the similarity, "
                            "from 0 (none) to below 1: the cosine is (1 - W) times the "
                            "backbone's plus W times the histograms' (default: 0)")
    training = fit.add_argument_group("training")
    training.add_argument("--time-limit", type=positive(float), metavar="SECONDS",
                          help="stop fitting before this many seconds (default: no limit)")
    training.add_argument("--max-epochs", type=positive(int), default=10, metavar="N",
                          help="largest number of epochs (default: %(default)s)")
    training.add_argument("--batch-size", type=positive(int), default=32, metavar="N",
                          help="pairs per batch (default: %(default)s)")
    training.add_argument("--lr", type=positive(float), default=1e-4,
                          help="peak learning rate (default: %(default)g)")
    training.add_argument("--pair-mining", choices=["graph", "none"], default="graph",
                          help="also learn from identities mined from the matching pairs "
                               "(graph), or from the listed pairs only (none) "
                               "(default: %(default)s)")
    add_random_state(training)
    fit.set_defaults(run="commands:run_fit")


def _pair_prediction_options(*, label):
    """Parents of the commands that score pairs with a saved model."""
    threshold = argparse.ArgumentParser(add_help=False)
    threshold.add_argument("--threshold", type=probability, metavar="P",
                           help="match probability above which a pair matches "
                                "(default: the model's, 0.5)")
    return [_model_options(), _column_options(label=label),
            output_options(PROGRESS), threshold,
            error_options("leave their pairs without a prediction"), runtime_options()]


def add_evaluate(commands):
    evaluate = commands.add_parser(
        "evaluate", formatter_class=Formatter, parents=_pair_prediction_options(label=True),
        help="print ROC AUC and accuracy of a model on a labelled pairs CSV",
        description=describe(
            "Print the ROC AUC of the match probability and the accuracy of the "
            "predictions at a threshold, on the labelled pairs of a CSV file, and the "
            "threshold with the best accuracy on them (ties: the highest). --plot draws "
            "the ROC and precision-recall curves.",
            "sklearn-imgpair evaluate --model model.safetensors --data test.csv "
            "--plot curves.png"))
    evaluate.add_argument("--plot", metavar="FILE",
                          help="write the ROC and precision-recall curves side by side to a "
                               ".png, .pdf or .svg file (needs matplotlib)")
    evaluate.set_defaults(run="commands:run_evaluate")


def add_predict(commands):
    predict = commands.add_parser(
        "predict", formatter_class=Formatter, parents=_pair_prediction_options(label=False),
        help="write predictions and match probabilities to a CSV file",
        description=describe(
            "Write the input table (image paths made absolute) plus a 'prediction' column "
            "(a label) and a 'probability' column (the match probability) to a CSV file.",
            "sklearn-imgpair predict --model model.safetensors --data test.csv "
            "--output predictions.csv"))
    predict.add_argument("--output", required=True, metavar="CSV", help="CSV file to write")
    predict.add_argument("--proba", action="store_true",
                         help="also write the probability of each label, 'proba_<label>'")
    predict.set_defaults(run="commands:run_predict")
