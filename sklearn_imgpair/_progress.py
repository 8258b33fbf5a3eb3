"""Progress bars for long work: tqdm when it is installed, else a plain percentage."""

import sys

__all__ = ["progress_bar"]


class _PercentBar:
    """A minimal stand-in for ``tqdm``: prints whole percentages to stderr."""

    def __init__(self, total, desc):
        self.total = total
        self.desc = desc
        self.n = 0
        self._shown = -1

    def update(self, n=1):
        self.n += n
        if not self.total:
            return
        percent = min(100, int(100 * self.n / self.total))
        if percent != self._shown:
            self._shown = percent
            sys.stderr.write(f"\r{self.desc}: {percent:3d}%")
            sys.stderr.flush()

    def close(self):
        if self._shown >= 0:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class _NoBar(_PercentBar):
    def update(self, n=1):
        self.n += n


def progress_bar(total, desc, *, unit="it", enabled=True):
    """A progress bar with ``update(n)`` and ``close()``, usable as a context manager.

    Parameters
    ----------
    total : int or None
        Expected number of units; None when unknown.
    desc : str
        Label printed before the bar.
    unit : str, default="it"
        Unit of ``total``; ``"B"`` scales to kB, MB, ... with tqdm.
    enabled : bool or None, default=True
        False shows nothing. None shows the bar only when stderr is a
        terminal (tqdm's convention).

    Returns
    -------
    bar : tqdm.tqdm or a fallback with the same ``update``/``close`` methods
    """
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return _NoBar(total, desc)
    try:
        from tqdm import tqdm
    except ImportError:
        return _PercentBar(total, desc)
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B",
                unit_divisor=1024 if unit == "B" else 1000, file=sys.stderr)
