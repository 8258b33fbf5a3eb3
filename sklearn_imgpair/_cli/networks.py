"""The network a command runs: a saved model or a pretrained backbone, on --device, in --precision.

Every command that runs the network reads these options the same way: ``--model`` (a fitted
matcher: its backbone embeds, its head gives match probabilities) or ``--backbone`` (a timm
backbone with its pretrained weights, or ``--weights-path``: cosine similarities, no
probability); ``--device`` (default: where the model was saved from, else ``auto``) and
``--precision`` (default: the model's, else ``auto``), both checked on this machine before any
work, and named on stderr under ``-v``; ``--batch-size`` (default: chosen for the device and
the image size). Images are embedded here too, a chunk at a time under a progress bar.
"""

import sys

import torch
from sklearn.utils import Bunch

from sklearn_imgpair._cli.inputs import CommandError
from sklearn_imgpair._io.embedding_cache import model_fingerprint
from sklearn_imgpair._nn.device import check_device, check_precision, device_type

__all__ = ["check_device_option", "check_precision_option",
           "check_same_network", "load_classifier", "load_model", "open_network",
           "report_runtime", "set_batch_size", "set_runtime"]

# The options that describe a backbone, meaningless with --model.
_BACKBONE_OPTIONS = ("weights_path", "model_kwargs", "image_size")


def check_device_option(device):
    """Fail unless ``--device`` names a torch device that this machine has (None: any)."""
    if device is None:
        return
    try:
        check_device(device)
    except ValueError as exc:
        raise CommandError(f"--device: {exc}") from None
    if device_type(device) == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {device!r}: this machine has no CUDA device; use "
                           "--device cpu or auto.")


def load_model(path, on_error="raise", device=None):
    """Load a classifier written by ``fit`` (no pickle, no code run), with one-line errors.

    ``device`` None keeps the saved device (the CPU where that is missing).
    """
    from sklearn_imgpair import ImagePairClassifier

    try:
        clf = ImagePairClassifier.load(path, device=device)
    except FileNotFoundError:
        raise CommandError(f"model file {path!r} does not exist.") from None
    except ValueError as exc:
        raise CommandError(f"{exc} Give a model file written by 'sklearn-imgpair fit'.") from None
    return clf.set_params(on_error=on_error)


def set_batch_size(clf, batch_size):
    """Apply a ``--batch-size`` option to a loaded model's prediction; None keeps its own.

    A model predicts in batches of images chosen for the device, or of its
    ``iterator_valid__batch_size`` where set; its ``batch_size`` is the
    training batch of pairs.
    """
    if batch_size is not None:
        clf.set_params(iterator_valid__batch_size=batch_size)
    return clf


def check_precision_option(precision, device):
    """Fail unless ``device`` can compute in ``--precision`` (None: the model's, checked)."""
    if precision is None:
        return
    try:
        check_precision(precision, device)
    except ValueError as exc:
        raise CommandError(f"--precision {precision}: {exc}") from None


def _device_of(module):
    return str(next(module.parameters()).device)


def report_runtime(estimator, args):
    """Under ``-v``, name on stderr the device of a fitted estimator and its precision.

    One line, e.g. ``Running on cpu in fp32 (precision auto: this CPU has no
    bfloat16 instructions)``: the precision that runs (``precision_``), and
    why, where ``precision`` is ``"auto"``.
    """
    if not getattr(args, "verbose", 0) or getattr(args, "quiet", False):
        return
    device, precision = _device_of(estimator.module_), estimator.precision_
    line = f"Running on {device} in {precision}"
    if estimator.precision == "auto":
        kind = device_type(device)
        native = precision == "bf16"
        if kind == "cpu":
            why = f"this CPU has {'' if native else 'no '}bfloat16 instructions"
        elif kind == "cuda":
            why = f"this GPU {'computes' if native else 'has no native'} bfloat16"
        else:
            why = f"fp32 on {kind}"
        line += f" (precision auto: {why})"
    print(line, file=sys.stderr, flush=True)


def _load_classifier(args):
    check_device_option(args.device)
    clf = load_model(args.model, args.on_error, device=args.device)
    if args.precision is not None:
        check_precision_option(args.precision, _device_of(clf.module_))
        clf.set_params(precision=args.precision)
    return set_batch_size(clf, args.batch_size)


def load_classifier(args):
    """The model of ``--model`` on ``--device``, in ``--precision``, with ``--batch-size``."""
    clf = _load_classifier(args)
    report_runtime(clf, args)
    return clf


def _backbone_embedder(args):
    """The fitted ``ImageEmbedder`` of ``--backbone`` (and ``--weights-path``), one-line errors."""
    from sklearn_imgpair import ImageEmbedder

    device = "auto" if args.device is None else args.device
    check_device_option(device)
    check_precision_option(args.precision, device)
    embedder = ImageEmbedder(
        args.backbone, pretrained=True, weights_path=args.weights_path,
        model_kwargs=args.model_kwargs, image_size=args.image_size,
        batch_size="auto" if args.batch_size is None else args.batch_size, device=device,
        precision="auto" if args.precision is None else args.precision,
        on_error=args.on_error)
    try:
        return embedder.fit()
    except FileNotFoundError as exc:
        raise CommandError(f"--weights-path: {exc}") from None
    except OSError as exc:  # pretrained weights out of reach
        raise CommandError(f"--backbone {args.backbone}: {exc} On the command line: "
                           "--weights-path FILE.") from None
    except ValueError as exc:  # not a timm model, a checkpoint of another network
        raise CommandError(f"--backbone {args.backbone}: {exc}") from None


def open_network(args, *, report=True):
    """The network of ``--model`` or ``--backbone``; None when neither is given.

    ``report``: name its device and precision under ``-v`` (:func:`report_runtime`).

    Returns
    -------
    network : Bunch or None
        ``classifier`` (the loaded model; None for a backbone), ``embedder``
        (a fitted ImageEmbedder that gives the vectors the search is built on,
        the classifier's when there is one) and ``name``, the option that
        gave it, for messages.
    """
    from sklearn_imgpair._embedder import search_embedder

    given = [f"--{name.replace('_', '-')}" for name in _BACKBONE_OPTIONS
             if getattr(args, name) is not None]
    if args.backbone is None and given:
        raise CommandError(f"{', '.join(given)} describe a --backbone; give --backbone NAME "
                           "(a --model file holds its own network).")
    if args.model is not None:
        clf = _load_classifier(args)
        # Its network, device, precision and batch size of prediction.
        embedder = search_embedder(None, clf)[0].set_params(on_error=args.on_error).fit()
        network = Bunch(classifier=clf, embedder=embedder, name=f"--model {args.model!r}")
    elif args.backbone is not None:
        network = Bunch(classifier=None, embedder=_backbone_embedder(args),
                        name=f"--backbone {args.backbone}")
    else:
        return None
    if report:
        report_runtime(network.embedder, args)
    return network


def _fingerprint(embedder):
    """A digest of the weights (and input size) of a fitted embedder's network."""
    return model_fingerprint(embedder.module_, embedder.image_size_)


def check_same_network(search, network, path, option):
    """Fail unless ``network`` (None: any) is the network that the saved ``search`` holds.

    A search's vectors can only be compared with vectors of the same network,
    so a file built with one network and queried with another is refused.
    """
    if network is None or _fingerprint(search.embedder_) == _fingerprint(network.embedder):
        return
    raise CommandError(
        f"{option} {path!r} was built with another network than {network.name} (their "
        "weights differ), so their vectors cannot be compared: give the --model or "
        f"--backbone that built {path!r}, or neither (the file holds its network).")


def set_runtime(search, args):
    """Apply ``--batch-size`` and ``--precision`` to a loaded search's embedder.

    (``--device`` is applied by ``ImageNeighbors.load``.) Without ``--batch-size``
    the batch size is chosen for this machine (``"auto"``), not the one saved.
    """
    embedder = search.embedder_
    embedder.set_params(batch_size="auto" if args.batch_size is None else args.batch_size)
    if args.precision is not None and args.precision != embedder.precision:
        check_precision_option(args.precision, _device_of(embedder.module_))
        embedder.set_params(precision=args.precision)  # its cached vectors are kept apart
    report_runtime(embedder, args)
    return search
