"""``python -m sklearn_imgpair``: the ``sklearn-imgpair`` command line (see ``--help``)."""

import sys

from sklearn_imgpair._cli.parser import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
