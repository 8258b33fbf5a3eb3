"""The ``export`` subcommand: a saved model as an ONNX file for the torch-free runtime."""

import os
import re

from sklearn_imgpair._cli.commands import check_writable, image_columns
from sklearn_imgpair._cli.inputs import CommandError, read_images
from sklearn_imgpair._io.container import stored_estimator

__all__ = ["load_estimator", "run_export"]

_GIVE = "Give a model file written by 'sklearn-imgpair fit' (or an estimator's save)."
# How export_onnx names a calibration image in its errors.
_CALIBRATION_IMAGE = re.compile(r"calibration_images\[(\d+)\]")


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


def _calibration_images(args):
    """The images of ``--calibration-images`` (None without it), checked before the export."""
    if args.calibration_images is None:
        if args.image_column is not None:
            raise CommandError("--image-column names the column of --calibration-images; "
                               "give both, or neither.")
        return None
    if args.quantize != "int8":
        raise CommandError("--calibration-images calibrate static int8 quantisation; add "
                           "--quantize int8.")
    return read_images(args.calibration_images, image_columns(args), "--calibration-images")


def _describe(metadata):
    calibration = metadata.get("calibration") or {}
    return {"int8": "int8 weights",
            "int8-static": (f"int8 weights and activations, calibrated on "
                            f"{calibration.get('n_images')} images")}.get(
        metadata["quantization"], "float32")


def run_export(args):
    """``export``: write a saved model's network and metadata to an ONNX file."""
    check_writable(args.output, "--output")
    calibration = _calibration_images(args)
    estimator = load_estimator(args.model)
    kind = type(estimator).__name__
    print(f"Exporting the {kind} of {args.model} ({estimator.image_size_} px) to ONNX"
          + ("" if calibration is None else
             f", int8 calibrated on the images of {args.calibration_images}"), flush=True)
    try:
        path = estimator.export_onnx(
            args.output, opset=args.opset, quantize=args.quantize,
            calibration_images=None if calibration is None else calibration.paths)
    except ImportError as exc:  # the onnx extra is missing
        raise CommandError(str(exc)) from None
    except (FileNotFoundError, ValueError) as exc:  # a calibration image cannot be read
        if calibration is None:
            raise
        raise CommandError(_CALIBRATION_IMAGE.sub(
            lambda match: calibration.where(int(match[1])), str(exc))) from None
    from sklearn_imgpair.onnx import OnnxImageMatcher

    metadata = OnnxImageMatcher(path).metadata_
    print(f"Wrote {path} ({os.path.getsize(path) / 2**20:.1f} MB, opset {metadata['opset']}, "
          f"{_describe(metadata)}). Run it without PyTorch: "
          f"sklearn_imgpair.onnx.OnnxImageMatcher({os.path.basename(path)!r})"
          + (".predict_proba(pairs)" if kind == "ImagePairClassifier" else ".transform(images)"))
    return 0
