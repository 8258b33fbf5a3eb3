"""inference_batch_size: images per forward pass for a device and an image size, without torch."""

import subprocess
import sys

import pytest

from sklearn_imgpair._images.batch_size import inference_batch_size


@pytest.mark.parametrize("device_kind, image_size, expected", [
    ("cpu", 224, 8), ("cpu", 64, 128), ("cpu", 32, 256), ("cpu", 96, 32), ("cpu", 448, 2),
    ("cpu", 5000, 1), ("mps", 224, 8),
    ("cuda", 224, 128), ("cuda", 384, 32), ("cuda", 32, 1024),
])
def test_a_batch_holds_as_many_pixels_at_every_image_size(device_kind, image_size, expected):
    assert inference_batch_size(device_kind, image_size) == expected


def test_the_batch_is_the_power_of_two_nearest_by_ratio():
    # 8 * (224 / 100) ** 2 = 40.1: 32 is 1.25 times smaller, 64 1.59 times larger.
    assert inference_batch_size("cpu", 100) == 32
    # 8 * (224 / 90) ** 2 = 49.6: 64 is 1.29 times larger, 32 1.55 times smaller.
    assert inference_batch_size("cpu", 90) == 64


def test_a_size_of_no_pixels_is_refused():
    with pytest.raises(ValueError, match="image_size must be a positive"):
        inference_batch_size("cpu", 0)


def test_the_module_imports_no_torch():
    code = ("import sys, sklearn_imgpair._images.batch_size; "
            "print(sorted(name for name in sys.modules if name.startswith(('torch', 'timm'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
