"""``python -m sklearn_imgpair``: the ``sklearn-imgpair`` command line (see ``--help``)."""

import sys

from sklearn_imgpair._cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
