"""The ``export`` subcommand: a saved model as an ONNX file for the torch-free runtime."""

import os

from sklearn_imgpair._cli.commands import check_writable
from sklearn_imgpair._cli.inputs import CommandError
from sklearn_imgpair._io.container import stored_estimator

__all__ = ["load_estimator", "run_export"]

_GIVE = "Give a model file written by 'sklearn-imgpair fit' (or an estimator's save)."


def load_estimator(path):
    """Load a classifier's or an embedder's model file onto the CPU, with one-line errors."""
    from sklearn_imgpair import ImageEmbedder, ImagePairClassifier

    try:
        # The model file names the estimator it holds; an embedder's is loaded as one.
        kind = ImageEmbedder if stored_estimator(path) == "ImageEmbedder" else ImagePairClassifier
        return kind.load(path, device="cpu")
    except FileNotFoundError:
        raise CommandError(f"model file {path!r} does not exist.") from None
    except ValueError as exc:
        raise CommandError(f"{exc} {_GIVE}") from None


def run_export(args):
    """``export``: write a saved model's network and metadata to an ONNX file."""
    check_writable(args.output, "--output")
    estimator = load_estimator(args.model)
    kind = type(estimator).__name__
    print(f"Exporting the {kind} of {args.model} ({estimator.image_size_} px) to ONNX",
          flush=True)
    try:
        path = estimator.export_onnx(args.output, opset=args.opset, quantize=args.quantize)
    except ImportError as exc:  # the onnx extra is missing
        raise CommandError(str(exc)) from None
    from sklearn_imgpair.onnx import OnnxImageMatcher

    matcher = OnnxImageMatcher(path)
    metadata = matcher.metadata_
    weights = "int8 weights" if metadata["quantization"] == "int8" else "float32"
    print(f"Wrote {path} ({os.path.getsize(path) / 2**20:.1f} MB, opset {metadata['opset']}, "
          f"{weights}). Run it without PyTorch: "
          f"sklearn_imgpair.onnx.OnnxImageMatcher({os.path.basename(path)!r})"
          + (".predict_proba(pairs)" if kind == "ImagePairClassifier" else ".transform(images)"))
    return 0
