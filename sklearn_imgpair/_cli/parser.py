"""The ``sklearn-imgpair`` command line's arguments: one subparser per command.

Only the standard library is imported here, so that ``--help`` answers at once: each command
names its function as ``"module:function"`` of ``_cli``, which ``main`` imports when the
command runs.
"""

import argparse

from sklearn_imgpair._cli.options import (
    IMAGES,
    PROG,
    PROGRESS,
    Formatter,
    add_deprecated,
    add_random_state,
    add_renamed,
    cosine,
    describe,
    error_options,
    network_options,
    output_options,
    positive,
    probability,
    runtime_options,
)
from sklearn_imgpair._cli.pairs_parser import add_evaluate, add_fit, add_predict
from sklearn_imgpair._version import __version__

__all__ = ["PROG", "build_parser"]

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
  sklearn-imgpair index --backbone swin_tiny_patch4_window7_224 --images catalogue/ \\
      --output catalogue.safetensors
  sklearn-imgpair index --images new_photos/ --output catalogue.safetensors --append
  sklearn-imgpair search --index catalogue.safetensors --query photos/ --output results.csv
  sklearn-imgpair search --model model.safetensors --gallery catalogue/ --query photos/ \\
      --n-neighbors 10 --output results.csv --plot results.png
  sklearn-imgpair dedup --model model.safetensors --images catalogue/ --output duplicates.csv \\
      --keep largest
  sklearn-imgpair dedup --index catalogue.safetensors --output duplicates.csv --threshold 0.95
  sklearn-imgpair export --model model.safetensors --output model.onnx --quantize int8
  sklearn-imgpair export --model model.safetensors --output model.onnx --quantize int8 \\
      --calibration-images train.csv
"""


def _add_demo(commands):
    demo = commands.add_parser(
        "demo", formatter_class=Formatter, parents=[runtime_options("auto", "auto")],
        help="fit and evaluate a matcher on synthetic data, offline",
        description=describe(
            "Draw a synthetic product-matching data set, fit a small Siamese Swin from random "
            "weights, evaluate it, print a few predictions and the embedding shape, and save "
            "the model. Needs no network; takes about two minutes on two CPU cores. --device "
            "and --precision set where and how the demo's classifier trains and predicts.",
            "sklearn-imgpair demo --output demo"))
    demo.add_argument("--output", metavar="FOLDER",
                      help="folder for images and model (default: a new temp folder)")
    demo.add_argument("--time-limit", type=positive(float), default=90.0, metavar="SECONDS",
                      help="seconds for fitting (default: 90)")
    add_random_state(demo)
    demo.set_defaults(run="demo:run_demo")


def _image_options():
    """The options of the commands that read images: CSV column, batch size."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--image-column", metavar="COLUMN",
                        help="column of image paths of a CSV input, relative to the CSV "
                             "file's folder (default: the file's only column, or both "
                             "Image1 and Image2 of a pairs CSV)")
    parent.add_argument("--batch-size", type=positive(int), metavar="N",
                        help="images per forward pass (default: chosen for the device and "
                             "the image size)")
    return parent


def _add_embed(commands):
    embed = commands.add_parser(
        "embed", formatter_class=Formatter,
        parents=[network_options(), _image_options(), runtime_options(),
                 output_options(PROGRESS), error_options("give them NaN vectors")],
        help="write the embedding of every distinct image to .npy or .csv",
        description=describe(
            "Embed every image file under a folder, or every distinct image of a CSV file "
            "(its --image-column, its only column, or both image columns of a pairs CSV), "
            "with the model's backbone (unit-length vectors, the ones whose cosine the model "
            "scores) or a pretrained --backbone. A .csv output has a 'path' column and one "
            "column per dimension (e0, e1, ...). A .npy output holds the (n_images, dim) "
            "float32 array, and NAME.paths.txt beside NAME.npy the image paths, one a line, "
            "in the same order.",
            "sklearn-imgpair embed --model model.safetensors --images catalogue/ "
            "--output embeddings.npy"))
    add_renamed(embed, "--images", "--data", required=True, metavar="CSV|FOLDER",
                help=f"the images: {IMAGES}")
    for old in ("--image1", "--image2"):  # a pairs CSV's columns, before --image-column
        add_deprecated(embed, old, "--image-column", metavar="COLUMN")
    embed.add_argument("--output", required=True, metavar="PATH",
                       help="file to write, ending in .npy or .csv")
    embed.set_defaults(run="commands:run_embed")


def _catalogue_options(effect, optional_with="--index"):
    """Parents of ``index``, ``search`` and ``dedup``: the network, how it runs, CSV column."""
    return [network_options(optional_with=optional_with), _image_options(), runtime_options(),
            output_options(PROGRESS), error_options(effect)]


def _add_index(commands):
    index = commands.add_parser(
        "index", formatter_class=Formatter,
        parents=_catalogue_options("leave them out of the index", optional_with="--append"),
        help="embed a catalogue once and save it as a search file that grows",
        description=describe(
            "Embed every image of a folder or CSV file with --model or a pretrained "
            "--backbone and save the search (ImageNeighbors: the network, the image paths "
            "and their vectors) to one .safetensors file, which 'search --index' and 'dedup "
            "--index' use without embedding the catalogue again. --append adds the images "
            "of --images that the file does not hold yet: an image already in it, unchanged "
            "(same path, size and modification time), is not embedded again, and one "
            "changed since is embedded again: its old row is removed and the new one added at "
            "the end, so the rows after it move up; a file that no longer exists (--on-error "
            "warn) keeps its row and is named on stderr. The command prints how many images "
            "it embedded and how many it reused. The file is replaced only once the "
            "new one is complete, so a failed run leaves it as it was. --dask embeds on a "
            "Dask cluster.",
            "sklearn-imgpair index --backbone swin_tiny_patch4_window7_224 --images "
            "catalogue/ --output catalogue.safetensors"))
    index.add_argument("--images", required=True, metavar="CSV|FOLDER",
                       help=f"the images: {IMAGES}")
    index.add_argument("--output", required=True, metavar="FILE",
                       help="the search file to write (.safetensors; an existing file is "
                            "replaced only once the new one is complete)")
    index.add_argument("--append", action="store_true",
                       help="add the images to the existing --output file instead of "
                            "building a new one; --model/--backbone are then optional")
    index.add_argument("--dask", metavar="ADDRESS",
                       help="embed the images on the Dask cluster whose scheduler is at "
                            "ADDRESS (e.g. tcp://10.0.0.1:8786; needs the distributed "
                            "extra); the workers must read the same paths. Default device "
                            "there: cpu (the file is saved with --device, default auto)")
    index.add_argument("--algorithm", choices=["brute", "faiss"],
                       help="exact search (brute), or a FAISS index (needs the faiss extra) "
                            "(default: brute; with --append, the file's)")
    index.add_argument("--faiss-index", choices=["flat", "ivf", "hnsw"],
                       help="with --algorithm faiss: exact (flat) or approximate and faster "
                            "on large catalogues (ivf, hnsw) (default: flat)")
    index.set_defaults(run="index:run_index")


def _add_search(commands):
    search = commands.add_parser(
        "search", formatter_class=Formatter,
        parents=_catalogue_options("leave them out of the gallery, and unreadable queries "
                                   "out of the output"),
        help="find the most similar catalogue images of each query image",
        description=describe(
            "Embed every image of a gallery (a catalogue) once, or open the search that "
            "'index' saved (--index: only the queries are embedded), then find the "
            "--n-neighbors nearest gallery images of each query image by the cosine of their "
            "embeddings, with the model's match probability. The output CSV is a pairs table "
            "with one row per query and rank: Image1 (the query), Image2 (the gallery image), "
            "rank (from 1), probability, distance (1 - cosine); with a --backbone (or an index "
            "built with one) there is no match probability, and a similarity column (the "
            "cosine) takes its place. A query that is also in the gallery finds itself first; "
            "--min-proba (--min-similarity) leaves out the matches below a probability "
            "(similarity). --plot draws the first queries and their matches.",
            "sklearn-imgpair search --model model.safetensors --gallery catalogue/ "
            "--query photos/ --n-neighbors 10 --output results.csv --plot results.png"))
    gallery = search.add_mutually_exclusive_group(required=True)
    gallery.add_argument("--gallery", metavar="CSV|FOLDER",
                         help=f"the images searched, embedded now: {IMAGES}")
    gallery.add_argument("--index", metavar="FILE",
                         help="the images searched: a file written by 'index', embedded "
                              "already")
    search.add_argument("--query", required=True, metavar="CSV|FOLDER",
                        help=f"the images to look up: {IMAGES}")
    add_renamed(search, "--n-neighbors", "--k", type=positive(int), default=10, metavar="K",
                 help="gallery images found per query, at most the gallery's size "
                      "(default: %(default)s)")
    search.add_argument("--min-proba", type=probability, metavar="P",
                        help="leave out the matches whose probability is below P, from 0 "
                             "to 1, so that a query may have fewer than K (default: keep all; "
                             "needs a model's match probability)")
    search.add_argument("--min-similarity", type=cosine, metavar="S",
                        help="with a --backbone: leave out the matches whose cosine similarity "
                             "is below S, from -1 to 1 (default: keep all)")
    search.add_argument("--output", required=True, metavar="CSV", help="CSV file to write")
    search.add_argument("--plot", metavar="FILE",
                        help="draw the queries beside their matches and probabilities to a "
                             ".png, .pdf or .svg file (needs matplotlib)")
    search.add_argument("--plot-queries", type=positive(int), default=8, metavar="N",
                        help="queries drawn by --plot, the first ones, each with its first "
                             "10 matches at most (default: %(default)s)")
    search.add_argument("--report", metavar="HTML",
                        help="also write one self-contained .html page: every query, then its "
                             "matches with thumbnails, paths and scores")
    search.set_defaults(run="retrieval:run_search")


def _add_dedup(commands):
    dedup = commands.add_parser(
        "dedup", formatter_class=Formatter,
        parents=_catalogue_options("leave them out"),
        help="find the pairs of images that match (duplicates) in a folder or CSV",
        description=describe(
            "Find the exact copies (same bytes or same decoded pixels, by hashes, without the "
            "network), then every pair of images whose match probability is above the "
            "threshold, without scoring all pairs one by one: one file of each set of copies "
            "is embedded, once (none with --index, whose catalogue is embedded already), and "
            "candidates come from a nearest-neighbour search. The output CSV has the columns "
            "Image1, Image2, probability (1 for a copy, paired with the first file it copies) "
            "and group (a number from 0 for each group of duplicates), most likely first; "
            "with a --backbone (or an index built with one) a similarity column (the cosine) "
            "takes the place of probability. The command prints how many pairs, copies and "
            "groups it found. --keep writes NAME_remove.csv beside the output NAME.csv: the "
            "files to remove (Image1) and the kept file each one duplicates (Image2); "
            "nothing is deleted.",
            "sklearn-imgpair dedup --model model.safetensors --images catalogue/ "
            "--output duplicates.csv --keep largest"))
    images = dedup.add_mutually_exclusive_group(required=True)
    images.add_argument("--images", metavar="CSV|FOLDER", help=f"the images: {IMAGES}")
    images.add_argument("--index", metavar="FILE",
                        help="the images of a file written by 'index', embedded already")
    dedup.add_argument("--output", required=True, metavar="CSV", help="CSV file to write")
    dedup.add_argument("--threshold", type=cosine, metavar="T",
                       help="match probability (0 to 1) above which two images are "
                            "duplicates (default: the model's, 0.5); with a --backbone, the "
                            "cosine similarity (-1 to 1) above which they are (default: 0.9)")
    dedup.add_argument("--n-neighbors", type=positive(int), metavar="K",
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
                            "group, every member that is a copy of the file kept or scores "
                            "above the threshold with it, each with the kept file (the first "
                            "in input order, the largest in pixels then bytes, or the newest "
                            "by modification time; never one that cannot be read). A member "
                            "joined to the kept file only through others (single linkage) is "
                            "not listed, only counted; nothing is deleted")
    dedup.add_argument("--report", metavar="HTML",
                       help="also write one self-contained .html page: every group, its "
                            "members with thumbnails, paths and scores, exact copies and "
                            "(with --keep) the file kept")
    dedup.set_defaults(run="dedup:run_dedup")


def _add_export(commands):
    export = commands.add_parser(
        "export", formatter_class=Formatter,
        help="export a saved model to ONNX, to run it without PyTorch",
        description=describe(
            "Write the network of a saved model (an ImagePairClassifier's pair graph, or an "
            "ImageEmbedder's embedding graph) and its settings (image size, normalisation, "
            "labels, threshold) to an ONNX file, run by sklearn_imgpair.onnx.OnnxImageMatcher "
            "with onnxruntime alone, or by any ONNX runtime. Needs the onnx extra: pip install "
            "\"sklearn-imgpair[onnx]\". --quantize int8 with --calibration-images "
            "calibrates static int8 on a sample of the images the model will see.",
            "sklearn-imgpair export --model model.safetensors --output model.onnx"))
    export.add_argument("--model", required=True, metavar="PATH",
                        help="model file written by 'fit' or an estimator's save")
    export.add_argument("--output", required=True, metavar="PATH",
                        help="ONNX file to write (.onnx; an existing file is replaced only "
                             "once the new one is complete)")
    export.add_argument("--opset", type=positive(int), metavar="N",
                        help="ONNX opset, 18 or later (default: the exporter's, 20)")
    export.add_argument("--quantize", choices=["int8"],
                        help="int8 quantisation of the weights: about a quarter of the size, "
                             "faster on most CPUs; dynamic (activations quantised at run "
                             "time) unless --calibration-images are given (default: float32)")
    export.add_argument("--calibration-images", metavar="CSV|FOLDER",
                        help="with --quantize int8: static quantisation, its activation ranges "
                             "measured on these images, a few dozen to a few hundred of the "
                             f"kind the model will see: {IMAGES}")
    export.add_argument("--image-column", metavar="COLUMN",
                        help="column of image paths of a --calibration-images CSV (default: "
                             "its only column, or both Image1 and Image2 of a pairs CSV)")
    export.set_defaults(run="export:run_export")


def build_parser():
    """The argument parser of ``sklearn-imgpair``, with one subparser per command.

    Returns
    -------
    parser : argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION, epilog=_EXAMPLES,
                                     formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, add_fit, add_evaluate, add_predict, _add_embed, _add_index,
                _add_search, _add_dedup, _add_export):
        add(commands)
    return parser
