"""The ``sklearn-imgpair`` program: run the command asked for, and report errors on one line.

Only the standard library is imported here too; each command's module (numpy, pandas,
scikit-learn, then torch) is imported when the command runs.
"""

import importlib
import os
import sys
import traceback

from sklearn_imgpair._cli.parser import PROG, build_parser

__all__ = ["TRACEBACK_ENV", "CommandError", "main"]

# Set to 1 to see the traceback of an error (as -v does for the commands that have it).
TRACEBACK_ENV = "SKLEARN_IMGPAIR_TRACEBACK"
# Errors that mean bad input, besides CommandError; their message is all the user needs.
_INPUT_ERRORS = (OSError, ValueError, TypeError)


class CommandError(Exception):
    """Bad input to a subcommand; the command line prints the message, no traceback."""


def _one_line(error, with_type):
    message = " ".join(str(error).split())
    if with_type:
        return f"{type(error).__name__}: {message}" if message else type(error).__name__
    return message or type(error).__name__


def _report(error, args, *, with_type):
    """Print the error on one line of stderr, after its traceback if asked for."""
    if getattr(args, "verbose", 0) or os.environ.get(TRACEBACK_ENV) == "1":
        traceback.print_exception(error, file=sys.stderr)
        hint = ""
    else:
        hint = f" (-v or {TRACEBACK_ENV}=1 shows the traceback)" if with_type else ""
    print(f"{PROG}: error: {_one_line(error, with_type)}{hint}", file=sys.stderr)


def main(argv=None):
    """Run the ``sklearn-imgpair`` command line.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name; None reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success; 2 for bad usage or bad input (a one-line message on
        stderr, no traceback); 1 for any other error (one line naming the
        exception's type); 130 when interrupted. With ``-v`` (or
        ``SKLEARN_IMGPAIR_TRACEBACK=1`` in the environment) the traceback
        comes before the line.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    module, function = args.run.split(":")
    try:
        # Imported only now that a command runs: numpy, pandas, scikit-learn, then torch.
        run = getattr(importlib.import_module(f"sklearn_imgpair._cli.{module}"), function)
        return run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CommandError, *_INPUT_ERRORS) as exc:
        _report(exc, args, with_type=False)
        return 2
    except Exception as exc:  # a bug, or bad input that the library did not foresee
        _report(exc, args, with_type=True)
        return 1
