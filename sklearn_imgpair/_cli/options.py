"""The options that several commands share, and the types that check their values.

Only the standard library is imported here, as in :mod:`~sklearn_imgpair._cli.parser`, so that
``--help`` answers at once. Each ``*_options`` function returns a parent parser that a command
takes in ``parents=[...]``.
"""

import argparse
import json
import math
import sys
import textwrap

__all__ = ["IMAGES", "MODEL_HELP", "PROG", "PROGRESS", "Formatter", "add_deprecated",
           "add_random_state", "add_renamed", "cosine", "describe", "error_options", "json_object",
           "network_options", "output_options", "positive", "probability", "runtime_options",
           "share"]

PROG = "sklearn-imgpair"

PROGRESS = "show progress bars even when the output is not a terminal"

IMAGES = ("a folder (every image file under it) or a CSV file of image paths (see "
          "--image-column)")

MODEL_HELP = ("model file written by 'fit' (safetensors and JSON: loading it runs no code "
              "from it)")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the descriptions' line breaks; align option help at column 32."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=32)


def describe(text, example):
    """A subcommand's description: ``text`` wrapped, then an example command."""
    return f"{textwrap.fill(text, 79, break_on_hyphens=False)}\n\nexample:\n  {example}"


# ----------------------------------------------------------------------
# renamed options
# ----------------------------------------------------------------------


class _DeprecatedAlias(argparse.Action):
    """An old name of an option: it sets the new one and warns on stderr that it goes."""

    def __init__(self, option_strings, dest, *, replacement, **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{PROG}: warning: {option_string} is deprecated and will be removed in the next "
              f"release; use {self.replacement}.", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated(parser, old_name, replacement, **kwargs):
    """Add ``old_name``, an option that warns to use ``replacement``; --help leaves it out."""
    parser.add_argument(old_name, action=_DeprecatedAlias, replacement=replacement,
                        help=argparse.SUPPRESS, **kwargs)


def add_renamed(parser, name, old_name, *, required=False, **kwargs):
    """Add option ``name`` and ``old_name``, its deprecated alias for one release.

    A required option is required under either name (one of the two, not both).
    """
    if required:
        parser = parser.add_mutually_exclusive_group(required=True)
    parser.add_argument(name, **kwargs)
    add_deprecated(parser, old_name, name, dest=name[2:].replace("-", "_"),
                   type=kwargs.get("type"), metavar=kwargs.get("metavar"))


def add_random_state(parser):
    add_renamed(parser, "--random-state", "--seed", type=int, default=0, metavar="N",
                help="seed of every random choice, for a repeatable run (default: 0)")


# ----------------------------------------------------------------------
# types
# ----------------------------------------------------------------------


def json_object(text):
    """Parse an option's value as a JSON object into a dict (``--model-kwargs``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object {{...}}; got {text!r}")
    return value


def positive(kind):
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


def _number_in(low, high, *, closed_high=True, words):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (low <= value <= high if closed_high else low <= value < high):
            raise argparse.ArgumentTypeError(f"must be a number from {words}; got {text!r}")
        return value

    return parse


probability = _number_in(0, 1, words="0 to 1")
probability.__doc__ = "An argparse type: a number from 0 to 1."
share = _number_in(0, 1, closed_high=False, words="0 to below 1")
share.__doc__ = "An argparse type: a number from 0 up to, not including, 1."
cosine = _number_in(-1, 1, words="-1 to 1")
cosine.__doc__ = "An argparse type: a cosine similarity, from -1 to 1."


# ----------------------------------------------------------------------
# option groups
# ----------------------------------------------------------------------


def output_options(verbose_help):
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-v", "--verbose", action="count", default=0, help=verbose_help)
    parent.add_argument("-q", "--quiet", action="store_true", help="print no progress")
    return parent


def error_options(effect):
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--on-error", choices=["raise", "warn"], default="raise",
                        help="what an unreadable image (missing, empty, truncated, not an "
                             "image) does: stop with an error naming its CSV line (raise), "
                             f"or {effect} and list them once on stderr (warn) "
                             "(default: %(default)s)")
    return parent


def runtime_options(default_device="where the model was saved from, else auto",
                    default_precision="the model's, else auto"):
    """``--device`` and ``--precision``: where and in which arithmetic the network runs."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("hardware")
    group.add_argument("--device", metavar="DEVICE",
                       help="where the network runs: cpu, cuda, cuda:N, mps or auto (CUDA if "
                            "there is one, else MPS on Apple GPUs, else the CPU) (default: "
                            f"{default_device})")
    group.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                       help="arithmetic of the network: bf16 on CPUs with bfloat16 "
                            "instructions and recent GPUs, fp16 on CUDA only, refused where "
                            "the device cannot do it; auto trains in fp32 and predicts in "
                            "bf16 where the device computes it natively, else in fp32 "
                            f"(default: {default_precision})")
    return parent


def network_options(*, optional_with=None):
    """``--model`` or ``--backbone``: the network that embeds the images.

    One of the two is required, unless the command has the option ``optional_with``
    (``--index``, ``--append``): a saved search holds its network. Those commands
    check it themselves.
    """
    parent = argparse.ArgumentParser(add_help=False)
    which = parent.add_mutually_exclusive_group(required=optional_with is None)
    index_note = ("" if optional_with is None else
                  f" (optional with {optional_with}, whose file holds its network: if given, "
                  "it must be the network the file was built with, or the command stops)")
    which.add_argument("--model", metavar="PATH",
                       help=f"{MODEL_HELP}; its backbone embeds, its head gives match "
                            f"probabilities{index_note}")
    which.add_argument("--backbone", metavar="NAME",
                       help="a timm backbone, e.g. swin_tiny_patch4_window7_224, with its "
                            "pretrained weights (downloaded once, or --weights-path), instead "
                            "of a fitted --model: no training run, and no match probability "
                            "(cosine similarities instead)")
    backbone = parent.add_argument_group("backbone (with --backbone)")
    backbone.add_argument("--weights-path", metavar="FILE",
                          help="local .pth/.bin/.safetensors checkpoint of the backbone, "
                               "instead of downloading its pretrained weights")
    backbone.add_argument("--model-kwargs", type=json_object, metavar="JSON",
                          help="JSON object of timm.create_model arguments, as for 'fit'")
    backbone.add_argument("--image-size", type=positive(int), metavar="PIXELS",
                          help="side length images are resized to (default: the backbone's)")
    return parent
