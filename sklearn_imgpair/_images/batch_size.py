"""How many images to embed per forward pass, chosen for the device and the image size.

Torch-free, so that the ONNX runtime sizes its batches by the same rule as the
torch estimators.
"""

import math

__all__ = ["inference_batch_size"]

# The fastest batch, in 224 px images: measured on a CPU (see inference_batch_size),
# a table value on CUDA; other image sizes hold as many pixels.
CPU_BATCH_AT_224 = 8
CUDA_BATCH_AT_224 = 128
REFERENCE_IMAGE_SIZE = 224
# Bounds for small images, past which larger batches were no faster.
MAX_CPU_BATCH = 256
MAX_CUDA_BATCH = 1024


def inference_batch_size(device_kind, image_size):
    """Return the number of images per forward pass that embeds fastest.

    The fastest batch holds about as many pixels at any image size: on a CPU,
    8 images of 224 px. Measured on a quiet 2-core AVX2 CPU (the raw forward,
    medians of 3 in rotating order), images/s by batch size: swin_tiny at
    224 px, 4: 8.95, 8: 9.11, 16: 8.04, 32: 6.51; a small Swin at 64 px,
    64: 655, 128: 647, 256: 484: the best batch holds about 8 * 224 * 224
    pixels, and larger ones were slower (``benchmarks/bench_pairs.py``
    prints the curve). On CUDA the figure is 128 images of 224 px, a table
    value, not measured here.

    Parameters
    ----------
    device_kind : str
        The kind of device: ``"cuda"``, or ``"cpu"``; any other (``"mps"``)
        is sized as the CPU.
    image_size : int
        Side length in pixels of the square images.

    Returns
    -------
    batch_size : int
        The power of two nearest (by ratio) to ``8 * (224 / image_size) ** 2``
        on a CPU, clipped to [1, 256]; to ``128 * (224 / image_size) ** 2`` on
        CUDA, clipped to [1, 1024].

    Examples
    --------
    >>> from sklearn_imgpair._images.batch_size import inference_batch_size
    >>> inference_batch_size("cpu", 224), inference_batch_size("cpu", 64)
    (8, 128)
    >>> inference_batch_size("cuda", 224)
    128
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be a positive number of pixels; got {image_size!r}.")
    if device_kind == "cuda":
        images_at_224, largest = CUDA_BATCH_AT_224, MAX_CUDA_BATCH
    else:
        images_at_224, largest = CPU_BATCH_AT_224, MAX_CPU_BATCH
    images = images_at_224 * (REFERENCE_IMAGE_SIZE / image_size) ** 2
    return int(min(max(2 ** round(math.log2(images)), 1), largest))
