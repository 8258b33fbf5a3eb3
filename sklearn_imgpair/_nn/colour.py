"""Colour histograms of image batches, computed on the device as part of the network."""

import itertools
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ColourHistogram"]


class ColourHistogram(nn.Module):
    """Joint RGB histogram of each image, with trilinear (soft) binning.

    The colour distribution of an object does not change when it turns,
    shifts or is seen from further away, which a network trained for a few
    minutes on a few dozen objects has not yet learnt. :class:`SiameseNet`
    with ``colour_share > 0`` appends this histogram to the backbone's
    embedding, so that the cosine similarity of two images is a fixed blend
    of the two cosines and the backbone learns what colour does not tell.

    Each pixel spreads its unit weight over the ``bins ** 3`` bin centres
    around it, linearly in each channel (a tent of one bin's width), so that
    a small change of colour moves weight between neighbouring bins instead of
    jumping from one bin to the next; with ``bins=8`` it is the classic
    8x8x8 histogram, smoothed.

    Parameters
    ----------
    bins : int, default=8
        Bins per channel (at least 2); the histogram has ``bins ** 3`` entries.

    Notes
    -----
    The module has no parameters and nothing flows back through it: its
    input is the (augmented) image, not a learnt feature. ``forward`` takes
    ``(n, 3, h, w)`` floats in ``[0, 1]`` and returns ``(n, bins ** 3)``
    unit vectors: the square roots of the bin frequencies (the Hellinger
    embedding, whose cosine is the Bhattacharyya coefficient of the two
    histograms). Values outside ``[0, 1]`` count as the nearest extreme; NaN
    pixels are not allowed.
    """

    def __init__(self, bins=8):
        super().__init__()
        if not isinstance(bins, Integral) or isinstance(bins, bool):
            raise TypeError(f"bins must be an integer of at least 2; got {bins!r}.")
        if bins < 2:
            raise ValueError(f"bins must be an integer of at least 2; got {bins!r}.")
        self.bins = int(bins)

    @property
    def dim(self):
        """Length of the histogram, ``bins ** 3``."""
        return self.bins ** 3

    def forward(self, images):
        bins = self.bins
        if not images.is_floating_point():
            raise TypeError(f"ColourHistogram takes floating-point images in [0, 1]; got "
                            f"{images.dtype} (divide uint8 images by 255).")
        # In float32 whatever the input (bf16 under autocast): every op below follows
        # its inputs' dtype, so the counting is exact to float32.
        with torch.no_grad():
            # Position of each pixel on the bin axis (bin i covers [i, i + 1) / bins,
            # its centre at i), clamped so that the edge bins take the extremes whole;
            # it lies between centres ``low`` and ``low + 1``, at ``frac`` from ``low``.
            position = (images.float() * bins - 0.5).clamp(0, bins - 1).flatten(2)
            low = position.floor().clamp(max=bins - 2)
            frac = position - low
            fracs, lows = frac.unbind(1), low.long().unbind(1)  # per channel, (n, pixels)
            # Each pixel adds to the 8 corners of its cell, one scatter per corner (a
            # dense pixels x bins product took 6 to 10 times as long on a CPU).
            counts = torch.zeros((images.shape[0], self.dim), device=images.device)
            for corner in itertools.product((0, 1), repeat=3):
                weight, index = 1.0, 0
                for channel_frac, channel_low, upper in zip(fracs, lows, corner):
                    weight = weight * (channel_frac if upper else 1.0 - channel_frac)
                    index = index * bins + channel_low + upper
                counts.scatter_add_(1, index, weight)
            return F.normalize(counts.sqrt(), dim=-1)

    def extra_repr(self):
        return f"bins={self.bins}"
