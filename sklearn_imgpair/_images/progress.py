"""Progress bars on stderr for the long steps of the estimators (``verbose >= 1``)."""

import sys

from tqdm import tqdm

__all__ = ["advancing", "progress_bar"]


def progress_bar(total, desc, verbose, *, unit="image"):
    """A tqdm bar of ``total`` steps on stderr, shown only when ``verbose >= 1``.

    Parameters
    ----------
    total : int
        Steps the bar counts to.
    desc : str
        What is counted, shown left of the bar (e.g. ``"Embedding"``).
    verbose : int
        The estimator's ``verbose``; 0 (or less) gives a disabled bar that
        prints nothing, so callers update it either way.
    unit : str, default="image"
        Name of one step.

    Returns
    -------
    bar : tqdm
        A context manager; closing it prints the final count.
    """
    # sys.stderr is read at each call, so that redirections (and pytest) see the bar.
    return tqdm(total=total, desc=desc, unit=unit, disable=verbose < 1, file=sys.stderr,
                dynamic_ncols=True, leave=True)


def advancing(batches, bar):
    """Yield ``batches``, advancing ``bar`` by each batch's length once it was used.

    Parameters
    ----------
    batches : iterable of sequences
        Batches whose first element has one entry per step (e.g. the images
        of a ``(images, errors)`` batch).
    bar : tqdm
        Advanced when the caller asks for the next batch, i.e. after it has
        done its work on this one.

    Yields
    ------
    batch
        The items of ``batches``, unchanged.
    """
    for batch in batches:
        yield batch
        bar.update(len(batch[0]))
