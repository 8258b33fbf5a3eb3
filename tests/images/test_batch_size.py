"""inference_batch_size: images per forward pass for a device and an image size, without torch."""

import subprocess
import sys

import pytest

from sklearn_imgpair._images.batch_size import inference_batch_size


@pytest.mark.parametrize("device_kind, image_size, expected", [
    ("cpu", 224, 16), ("cpu", 64, 256), ("cpu", 32, 256), ("cpu", 96, 64), ("cpu", 448, 4),
    ("cpu", 5000, 1), ("mps", 224, 16),
    ("cuda", 224, 128), ("cuda", 384, 32), ("cuda", 32, 1024),
])
def test_a_batch_holds_as_many_pixels_at_every_image_size(device_kind, image_size, expected):
    assert inference_batch_size(device_kind, image_size) == expected


def test_the_batch_is_the_power_of_two_nearest_by_ratio():
    # 16 * (224 / 100) ** 2 = 80.3: 64 is 1.25 times smaller, 128 1.59 times larger.
    assert inference_batch_size("cpu", 100) == 64
    # 16 * (224 / 90) ** 2 = 99.1: 128 is 1.29 times larger, 64 1.55 times smaller.
    assert inference_batch_size("cpu", 90) == 128


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
