"""Helpers shared by the benchmark scripts: models, photos, timing, tables, memory."""

import os
import statistics
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

# The realistic model and a small one; --quick uses the tiny test Swin.
MODELS = {
    "swin_tiny": dict(model_name="swin_tiny_patch4_window7_224", image_size=224,
                      model_kwargs=None),
    "small": dict(model_name="swin_tiny_patch4_window7_224", image_size=64,
                  model_kwargs=dict(patch_size=4, window_size=4, embed_dim=48,
                                    depths=(2, 2, 2), num_heads=(2, 4, 8))),
    "tiny": dict(model_name="swin_tiny_patch4_window7_224", image_size=32,
                 model_kwargs=dict(patch_size=2, window_size=4, embed_dim=16,
                                   depths=(1, 1), num_heads=(1, 2))),
}


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# Every timing runs its function until this many seconds have passed (set from
# --min-seconds), so that fast models are not timed on a blip of the machine.
MIN_SECONDS = {"value": 0.0}


def timed(function, device):
    """Return ``(seconds per run, last result)`` of ``function()``, waiting for the GPU.

    The function runs once, and again until ``MIN_SECONDS["value"]`` have passed.
    """
    runs, elapsed = 0, 0.0
    while runs == 0 or elapsed < MIN_SECONDS["value"]:
        synchronize(device)
        start = time.perf_counter()
        result = function()
        synchronize(device)
        elapsed += time.perf_counter() - start
        runs += 1
    return elapsed / runs, result


def median(values):
    return statistics.median(values)


def write_photos(folder, n_images, size=500, quality=90, seed=0):
    """Write ``n_images`` deterministic photo-like JPEGs of ``size`` x ``size`` pixels.

    Each is a smooth colour gradient with a few filled shapes, blurred and
    with sensor-like noise, so that it compresses like a photograph (about
    40-80 kB at 500 px) rather than like a flat synthetic image.
    """
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size)
    paths = []
    for index in range(n_images):
        path = os.path.join(folder, f"photo_{index:06d}.jpg")
        paths.append(path)
        if os.path.exists(path):
            continue
        start, end = rng.uniform(0, 255, size=(2, 3))
        pixels = start + (end - start) * ramp[None, :, None] * ramp[:, None, None] ** 0.5
        image = Image.fromarray(pixels.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = rng.integers(0, size - 60, size=2)
            x1, y1 = x0 + rng.integers(40, size // 2), y0 + rng.integers(40, size // 2)
            fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((int(x0), int(y0), int(x1), int(y1)), fill=fill)
        image = image.filter(ImageFilter.GaussianBlur(2))
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size=(size, size, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=quality)
    return np.array(paths, dtype=object)


def reusing_pairs(paths, pairs_per_image=2, seed=0):
    """Pairs in which every image appears ``pairs_per_image`` times (on either side).

    As in the AutoMM tutorial's data (about 2 pairs per distinct image):
    ``len(paths) * pairs_per_image / 2`` pairs.
    """
    rng = np.random.default_rng(seed)
    slots = np.concatenate([rng.permutation(len(paths)) for _ in range(pairs_per_image)])
    pairs = paths[slots].reshape(-1, 2)
    return pairs


def decoded_tensors(paths, module, image_size, device):
    """The images of ``paths`` decoded, resized and normalised as the network takes them,
    already on ``device``: the input of the raw-backbone measurements."""
    from sklearn_imgpair import load_image

    images = torch.stack([load_image(path, image_size) for path in paths]).to(device)
    mean, std = module.mean.to(device), module.std.to(device)
    return (images.float() / 255.0 - mean) / std


def format_table(rows, columns):
    """A Markdown table of ``rows`` (dicts) with ``columns`` (key, header, format)."""
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |",
             "| " + " | ".join("---:" if fmt else "---" for _, _, fmt in columns) + " |"]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key, "")
            cells.append(format(value, fmt) if fmt and value != "" else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_machine(device):
    import platform

    from sklearn_imgpair._nn.device import available_cores, cpu_has_fast_bf16

    text = (f"{platform.processor() or platform.machine()}, {available_cores()} cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"bf16 instructions: {cpu_has_fast_bf16()}")
    if torch.device(device).type == "cuda":
        text += f", GPU: {torch.cuda.get_device_name(device)}"
    return text


def memory_mb():
    """Resident memory now and its peak, in MB: VmRSS and VmHWM on Linux, else ru_maxrss."""
    import resource
    import sys

    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak /= 2**20 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
        return peak, peak


def reset_peak_memory():
    """Reset the peak resident memory (Linux 4.0+); return whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False
