"""The ``sklearn-imgpair`` command line's arguments: one subparser per command.

Only the standard library is imported here, so that ``--help`` answers at once: each command
names its function as ``"module:function"`` of ``_cli``, which ``main`` imports when the
command runs.
"""

import argparse
import json
import math
import sys
import textwrap

from sklearn_imgpair._version import __version__

__all__ = ["PROG", "build_parser"]

PROG = "sklearn-imgpair"

_DESCRIPTION = """\
Image-to-image matching with Siamese Swin Transformers (scikit-learn, skorch, timm).

Data are CSV files of image pairs, one pair a row, as in the AutoMM tutorial:

    Image1,Image2,Label
    images/a_0.png,images/a_1.png,1
    images/a_0.png,images/b_2.png,0

Relative image paths are taken relative to the CSV file's folder. Start with
'sklearn-imgpair demo', or 'sklearn-imgpair COMMAND --help' for each command.
"""

_EXAMPLES = """\
examples:
  sklearn-imgpair demo --output demo
  sklearn-imgpair fit --train train.csv --model model.safetensors --time-limit 180
  sklearn-imgpair fit --train train.csv --model model.safetensors --no-pretrained --lr 2e-3 \\
      --image-size 64 --model-kwargs '{"embed_dim": 32, "depths": [2, 2], "num_heads": [2, 4]}'
  sklearn-imgpair evaluate --model model.safetensors --data test.csv
  sklearn-imgpair predict --model model.safetensors --data test.csv --output predictions.csv
  sklearn-imgpair embed --model model.safetensors --images catalogue/ --output embeddings.npy
  sklearn-imgpair search --model model.safetensors --gallery catalogue/ --query photos/ \\
      --n-neighbors 10 --output results.csv --plot results.png
  sklearn-imgpair dedup --model model.safetensors --images catalogue/ --output duplicates.csv \\
      --keep largest
  sklearn-imgpair export --model model.safetensors --output model.onnx --quantize int8
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the descriptions' line breaks; align option help at column 32."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=32)


def _describe(text, example):
    """A subcommand's description: ``text`` wrapped, then an example command."""
    return f"{textwrap.fill(text, 79, break_on_hyphens=False)}\n\nexample:\n  {example}"


class _DeprecatedAlias(argparse.Action):
    """An old name of an option: it sets the new one and warns on stderr that it goes."""

    def __init__(self, option_strings, dest, *, replacement, **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{PROG}: warning: {option_string} is deprecated and will be removed in the next "
              f"release; use {self.replacement}.", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_deprecated(parser, old_name, replacement, **kwargs):
    """Add ``old_name``, an option that warns to use ``replacement``; --help leaves it out."""
    parser.add_argument(old_name, action=_DeprecatedAlias, replacement=replacement,
                        help=argparse.SUPPRESS, **kwargs)


def _add_renamed(parser, name, old_name, *, required=False, **kwargs):
    """Add option ``name`` and ``old_name``, its deprecated alias for one release.

    A required option is required under either name (one of the two, not both).
    """
    if required:
        parser = parser.add_mutually_exclusive_group(required=True)
    parser.add_argument(name, **kwargs)
    _add_deprecated(parser, old_name, name, dest=name[2:].replace("-", "_"),
                    type=kwargs.get("type"), metavar=kwargs.get("metavar"))


def _add_random_state(parser):
    _add_renamed(parser, "--random-state", "--seed", type=int, default=0, metavar="N",
                 help="seed of every random choice, for a repeatable run (default: 0)")


def _json_object(text):
    """Parse an option's value as a JSON object into a dict (``--model-kwargs``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object {{...}}; got {text!r}")
    return value


def _positive(kind):
    """An argparse type: a positive, finite number of type ``kind`` (int or float)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {expected}; got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive, finite number; got {text!r}")
        return value

    return parse


def _probability(text):
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1; got {text!r}")
    return value


def _share(text):
    """An argparse type: a number from 0 up to, not including, 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to below 1; got {text!r}")
    return value


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


def _output_options(verbose_help):
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-v", "--verbose", action="count", default=0, help=verbose_help)
    parent.add_argument("-q", "--quiet", action="store_true", help="print no progress")
    return parent


def _error_options(effect):
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--on-error", choices=["raise", "warn"], default="raise",
                        help="what an unreadable image (missing, empty, truncated, not an "
                             "image) does: stop with an error naming its CSV line (raise), "
                             f"or {effect} and list them once on stderr (warn) "
                             "(default: %(default)s)")
    return parent


_MODEL_HELP = "model file written by 'fit' (safetensors and JSON: loading it runs no code from it)"


def _model_options():
    """The options of the commands that score pairs: the model, the pairs, the batch size."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--model", required=True, metavar="PATH", help=_MODEL_HELP)
    parent.add_argument("--data", required=True, metavar="CSV", help="pairs CSV file")
    parent.add_argument("--batch-size", type=_positive(int), metavar="N",
                        help="pairs per batch (default: the model's)")
    return parent


_PROGRESS = "show progress bars even when the output is not a terminal"


def _add_demo(commands):
    demo = commands.add_parser(
        "demo", formatter_class=_Formatter,
        help="fit and evaluate a matcher on synthetic data, offline",
        description=_describe(
            "Draw a synthetic product-matching data set, fit a small Siamese Swin from random "
            "weights, evaluate it, print a few predictions and the embedding shape, and save "
            "the model. Needs no network; takes about two minutes on two CPU cores.",
            "sklearn-imgpair demo --output demo"))
    demo.add_argument("--output", metavar="FOLDER",
                      help="folder for images and model (default: a new temp folder)")
    demo.add_argument("--time-limit", type=_positive(float), default=90.0, metavar="SECONDS",
                      help="seconds for fitting (default: 90)")
    _add_random_state(demo)
    demo.set_defaults(run="demo:run_demo")


def _add_fit(commands):
    fit = commands.add_parser(
        "fit", formatter_class=_Formatter,
        parents=[_column_options(label=True),
                 _output_options("also show a progress bar per epoch"),
                 _error_options("leave their pairs out of training")],
        help="fit a matcher on a pairs CSV and save it",
        description=_describe(
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
    model.add_argument("--model-kwargs", type=_json_object, metavar="JSON",
                       help="JSON object of timm.create_model arguments, e.g. "
                            "'{\"embed_dim\": 32, \"depths\": [2, 2], \"num_heads\": [2, 4]}'")
    model.add_argument("--image-size", type=_positive(int), metavar="PIXELS",
                       help="side length images are resized to (default: the model's, 224)")
    model.add_argument("--colour-share", type=_share, default=0.0, metavar="W",
                       help="weight of the images' colour histograms in the similarity, "
                            "from 0 (none) to below 1: the cosine is (1 - W) times the "
                            "backbone's plus W times the histograms' (default: 0)")
    training = fit.add_argument_group("training")
    training.add_argument("--time-limit", type=_positive(float), metavar="SECONDS",
                          help="stop fitting before this many seconds (default: no limit)")
    training.add_argument("--max-epochs", type=_positive(int), default=10, metavar="N",
                          help="largest number of epochs (default: %(default)s)")
    training.add_argument("--batch-size", type=_positive(int), default=32, metavar="N",
                          help="pairs per batch (default: %(default)s)")
    training.add_argument("--lr", type=_positive(float), default=1e-4,
                          help="peak learning rate (default: %(default)g)")
    training.add_argument("--pair-mining", choices=["graph", "none"], default="graph",
                          help="also learn from identities mined from the matching pairs "
                               "(graph), or from the listed pairs only (none) "
                               "(default: %(default)s)")
    _add_random_state(training)
    fit.set_defaults(run="commands:run_fit")


def _pair_prediction_options(*, label):
    """Parents of the commands that score pairs with a saved model."""
    threshold = argparse.ArgumentParser(add_help=False)
    threshold.add_argument("--threshold", type=_probability, metavar="P",
                           help="match probability above which a pair matches "
                                "(default: the model's, 0.5)")
    return [_model_options(), _column_options(label=label),
            _output_options(_PROGRESS), threshold,
            _error_options("leave their pairs without a prediction")]


def _add_evaluate(commands):
    evaluate = commands.add_parser(
        "evaluate", formatter_class=_Formatter, parents=_pair_prediction_options(label=True),
        help="print ROC AUC and accuracy of a model on a labelled pairs CSV",
        description=_describe(
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


def _add_predict(commands):
    predict = commands.add_parser(
        "predict", formatter_class=_Formatter, parents=_pair_prediction_options(label=False),
        help="write predictions and match probabilities to a CSV file",
        description=_describe(
            "Write the input table (image paths made absolute) plus a 'prediction' column "
            "(a label) and a 'probability' column (the match probability) to a CSV file.",
            "sklearn-imgpair predict --model model.safetensors --data test.csv "
            "--output predictions.csv"))
    predict.add_argument("--output", required=True, metavar="CSV", help="CSV file to write")
    predict.add_argument("--proba", action="store_true",
                         help="also write the probability of each label, 'proba_<label>'")
    predict.set_defaults(run="commands:run_predict")


def _image_options():
    """The options of the commands that embed images: the model, CSV column, batch size."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--model", required=True, metavar="PATH", help=_MODEL_HELP)
    parent.add_argument("--image-column", metavar="COLUMN",
                        help="column of image paths of a CSV input, relative to the CSV "
                             "file's folder (default: the file's only column, or both "
                             "Image1 and Image2 of a pairs CSV)")
    parent.add_argument("--batch-size", type=_positive(int), metavar="N",
                        help="images per batch (default: the model's)")
    return parent


_IMAGES = ("a folder (every image file under it) or a CSV file of image paths (see "
           "--image-column)")


def _add_embed(commands):
    embed = commands.add_parser(
        "embed", formatter_class=_Formatter,
        parents=[_image_options(), _output_options(_PROGRESS),
                 _error_options("give them NaN vectors")],
        help="write the embedding of every distinct image to .npy or .csv",
        description=_describe(
            "Embed every image file under a folder, or every distinct image of a CSV file "
            "(its --image-column, its only column, or both image columns of a pairs CSV), "
            "with the model's backbone (unit-length vectors, the ones whose cosine the model "
            "scores). A .csv output has a 'path' column and one column per dimension (e0, "
            "e1, ...). A .npy output holds the (n_images, dim) float32 array, and "
            "NAME.paths.txt beside NAME.npy the image paths, one a line, in the same order.",
            "sklearn-imgpair embed --model model.safetensors --images catalogue/ "
            "--output embeddings.npy"))
    _add_renamed(embed, "--images", "--data", required=True, metavar="CSV|FOLDER",
                 help=f"the images: {_IMAGES}")
    for old in ("--image1", "--image2"):  # a pairs CSV's columns, before --image-column
        _add_deprecated(embed, old, "--image-column", metavar="COLUMN")
    embed.add_argument("--output", required=True, metavar="PATH",
                       help="file to write, ending in .npy or .csv")
    embed.set_defaults(run="commands:run_embed")


def _catalogue_options(effect):
    """Parents of ``search`` and ``dedup``: the model, how it runs, CSV column, output."""
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", metavar="DEVICE",
                        help="where the network runs: cpu, cuda, cuda:N or auto (default: "
                             "where the model was saved from, else cpu)")
    return [_image_options(), device, _output_options(_PROGRESS), _error_options(effect)]


def _add_search(commands):
    search = commands.add_parser(
        "search", formatter_class=_Formatter,
        parents=_catalogue_options("leave them out of the gallery, and unreadable queries "
                                   "out of the output"),
        help="find the most similar catalogue images of each query image",
        description=_describe(
            "Embed every image of a gallery (a catalogue) once, then find the --n-neighbors "
            "nearest gallery images of each query image by the cosine of their embeddings, "
            "with the model's match probability. The output CSV is a pairs table with one row "
            "per query and rank: Image1 (the query), Image2 (the gallery image), rank (from "
            "1), probability, distance (1 - cosine). A query that "
            "is also in the gallery finds itself first; --min-proba leaves out the matches "
            "below a probability. --plot draws the first queries and their matches.",
            "sklearn-imgpair search --model model.safetensors --gallery catalogue/ "
            "--query photos/ --n-neighbors 10 --output results.csv --plot results.png"))
    search.add_argument("--gallery", required=True, metavar="CSV|FOLDER",
                        help=f"the images searched: {_IMAGES}")
    search.add_argument("--query", required=True, metavar="CSV|FOLDER",
                        help=f"the images to look up: {_IMAGES}")
    _add_renamed(search, "--n-neighbors", "--k", type=_positive(int), default=10, metavar="K",
                 help="gallery images found per query, at most the gallery's size "
                      "(default: %(default)s)")
    search.add_argument("--min-proba", type=_probability, metavar="P",
                        help="leave out the matches whose probability is below P, from 0 "
                             "to 1, so that a query may have fewer than K (default: keep all)")
    search.add_argument("--output", required=True, metavar="CSV", help="CSV file to write")
    search.add_argument("--plot", metavar="FILE",
                        help="draw the queries beside their matches and probabilities to a "
                             ".png, .pdf or .svg file (needs matplotlib)")
    search.add_argument("--plot-queries", type=_positive(int), default=8, metavar="N",
                        help="queries drawn by --plot, the first ones, each with its first "
                             "10 matches at most (default: %(default)s)")
    search.add_argument("--report", metavar="HTML",
                        help="also write one self-contained .html page: every query, then its "
                             "matches with thumbnails, paths and scores")
    search.set_defaults(run="retrieval:run_search")


def _add_dedup(commands):
    dedup = commands.add_parser(
        "dedup", formatter_class=_Formatter,
        parents=_catalogue_options("leave them out"),
        help="find the pairs of images that match (duplicates) in a folder or CSV",
        description=_describe(
            "Find the exact copies (same bytes or same decoded pixels, by hashes, without the "
            "network), then every pair of images whose match probability is above the "
            "threshold, without scoring all pairs one by one: one file of each set of copies "
            "is embedded, once, and candidates come from a nearest-neighbour search. The "
            "output CSV has the columns Image1, Image2, probability (1 for a copy, paired "
            "with the first file it copies) and group (a number from 0 for each group of "
            "duplicates), most likely first; the command prints how many pairs, copies and "
            "groups it found. --keep writes NAME_remove.csv beside the output NAME.csv: the "
            "files to remove (Image1) and the kept file each one duplicates (Image2); "
            "nothing is deleted.",
            "sklearn-imgpair dedup --model model.safetensors --images catalogue/ "
            "--output duplicates.csv --keep largest"))
    dedup.add_argument("--images", required=True, metavar="CSV|FOLDER",
                       help=f"the images: {_IMAGES}")
    dedup.add_argument("--output", required=True, metavar="CSV", help="CSV file to write")
    dedup.add_argument("--threshold", type=_probability, metavar="P",
                       help="match probability above which two images are duplicates "
                            "(default: the model's, 0.5)")
    dedup.add_argument("--n-neighbors", type=_positive(int), metavar="K",
                       help="look for the duplicates of an image among its K nearest images "
                            "only: faster on large folders, but may miss some (default: "
                            "every pair above the threshold)")
    dedup.add_argument("--linkage", choices=["single", "complete"], default="single",
                       help="how pairs make groups: images joined by a chain of pairs "
                            "(single), or groups in which every pair is above the threshold "
                            "(complete; pairs across two groups are left out) "
                            "(default: %(default)s)")
    dedup.add_argument("--keep", choices=["first", "largest", "newest"],
                       help="also write NAME_remove.csv beside the output NAME.csv: in each "
                            "group, every file but the one kept (the first in input order, "
                            "the largest in pixels then bytes, or the newest by modification "
                            "time), each with the kept file; nothing is deleted")
    dedup.add_argument("--report", metavar="HTML",
                       help="also write one self-contained .html page: every group, its "
                            "members with thumbnails, paths and scores, exact copies and "
                            "(with --keep) the file kept")
    dedup.set_defaults(run="dedup:run_dedup")


def _add_export(commands):
    export = commands.add_parser(
        "export", formatter_class=_Formatter,
        help="export a saved model to ONNX, to run it without PyTorch",
        description=_describe(
            "Write the network of a saved model (an ImagePairClassifier's pair graph, or an "
            "ImageEmbedder's embedding graph) and its settings (image size, normalisation, "
            "labels, threshold) to an ONNX file, run by sklearn_imgpair.onnx.OnnxImageMatcher "
            "with onnxruntime alone, or by any ONNX runtime. Needs the onnx extra: pip install "
            "\"sklearn-imgpair[onnx]\".",
            "sklearn-imgpair export --model model.safetensors --output model.onnx"))
    export.add_argument("--model", required=True, metavar="PATH",
                        help="model file written by 'fit' or an estimator's save")
    export.add_argument("--output", required=True, metavar="PATH",
                        help="ONNX file to write (.onnx; an existing file is replaced only "
                             "once the new one is complete)")
    export.add_argument("--opset", type=_positive(int), metavar="N",
                        help="ONNX opset, 18 or later (default: the exporter's, 20)")
    export.add_argument("--quantize", choices=["int8"],
                        help="int8 dynamic quantisation of the weights: about a quarter of "
                             "the size, faster on most CPUs, embeddings within a cosine of "
                             "about 0.9998 (default: float32)")
    export.set_defaults(run="export:run_export")


def build_parser():
    """The argument parser of ``sklearn-imgpair``, with one subparser per command.

    Returns
    -------
    parser : argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION, epilog=_EXAMPLES,
                                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_fit, _add_evaluate, _add_predict, _add_embed, _add_search,
                _add_dedup, _add_export):
        add(commands)
    return parser
