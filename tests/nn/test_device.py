"""device="auto": CUDA, then MPS, then the CPU; model files load where they are read.

precision="auto": bfloat16 for inference where the device computes it natively, fp32 in
training and elsewhere.
"""

import warnings

import pytest
import torch

from sklearn_imgpair import AcceleratedImagePairClassifier, ImageEmbedder, ImagePairClassifier
from sklearn_imgpair._nn import device as _device
from sklearn_imgpair._nn.device import (
    autocast,
    check_device,
    check_precision,
    loadable_device,
    loadable_precision,
    resolve_device,
    resolve_precision,
)


def _machine(monkeypatch, *, cuda, mps):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (True, False, "cuda"),
                                                 (False, True, "mps"), (False, False, "cpu")])
def test_auto_takes_cuda_then_mps_then_the_cpu(monkeypatch, cuda, mps, expected):
    _machine(monkeypatch, cuda=cuda, mps=mps)
    assert resolve_device("auto") == expected
    for device in ["cpu", "cuda:1", torch.device("cpu"), None]:
        assert resolve_device(device) is device  # only "auto" is resolved


def test_a_torch_without_mps_backend_means_no_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.backends, "mps")
    assert resolve_device("auto") == "cpu"


@pytest.mark.parametrize("saved", ["cuda", "cuda:1", "mps"])
def test_a_model_saved_on_a_missing_accelerator_loads_on_the_cpu(monkeypatch, saved):
    _machine(monkeypatch, cuda=False, mps=False)
    with pytest.warns(UserWarning, match=f"saved on device '{saved}'.*loaded on 'cpu'"):
        assert loadable_device(saved, None) == "cpu"
    assert loadable_device(saved, "cuda") == "cuda"  # asked for explicitly
    assert loadable_device("auto", None) == "auto"  # resolved on this machine


def test_mps_is_a_device_name():
    check_device("mps")
    with pytest.raises(ValueError, match="'mps', 'auto'"):
        check_device("gpu")


def test_auto_is_the_default_of_every_estimator():
    assert ImagePairClassifier().get_params()["device"] == "auto"
    assert ImageEmbedder().device == "auto"


def test_a_saved_model_file_of_another_machine_loads_here(monkeypatch, tmp_path):
    embedder = ImageEmbedder(pretrained=False, image_size=32, model_name="resnet18").fit()
    path = embedder.set_params(device="cuda").save(tmp_path / "embedder.safetensors")
    _machine(monkeypatch, cuda=False, mps=False)
    with pytest.warns(UserWarning, match="loaded on 'cpu'"):
        loaded = ImageEmbedder.load(path)
    assert loaded.device == "cpu"
    assert next(loaded.module_.parameters()).device.type == "cpu"


def _bf16_hardware(monkeypatch, native):
    monkeypatch.setattr(_device, "cpu_has_fast_bf16", lambda: native)
    monkeypatch.setattr(_device, "_cuda_has_bf16", lambda: native)


@pytest.mark.parametrize("device, native, expected", [
    ("cpu", True, "bf16"), ("cpu", False, "fp32"), (torch.device("cpu"), True, "bf16"),
    ("cuda", True, "bf16"), ("cuda:1", False, "fp32"), ("mps", True, "fp32"),
])
def test_auto_precision_is_bf16_for_inference_where_native_and_fp32_in_training(
        monkeypatch, device, native, expected):
    _bf16_hardware(monkeypatch, native)
    assert resolve_precision("auto", device) == expected
    assert resolve_precision("auto", device, training=True) == "fp32"
    for precision in ["fp32", "bf16", "fp16"]:  # only "auto" is resolved
        assert resolve_precision(precision, device) == precision
        assert resolve_precision(precision, device, training=True) == precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_resolves_the_auto_device(monkeypatch, native):
    _machine(monkeypatch, cuda=False, mps=False)
    _bf16_hardware(monkeypatch, native)
    assert resolve_precision("auto", "auto") == ("bf16" if native else "fp32")


@pytest.mark.parametrize("device", ["cpu", "meta", "mps", "auto"])
def test_auto_precision_passes_every_check_without_a_warning(monkeypatch, device):
    _bf16_hardware(monkeypatch, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_precision("auto", device)
        assert loadable_precision("auto", device) == "auto"  # resolved where it is loaded


@pytest.mark.parametrize("native, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_autocast_resolves_auto_for_inference_unless_training(monkeypatch, native, dtype):
    _bf16_hardware(monkeypatch, native)
    layer = torch.nn.Linear(4, 4)
    with autocast("auto", "cpu"):
        assert layer(torch.ones(1, 4)).dtype == dtype
    with autocast("auto", "cpu", training=True):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


def test_auto_precision_is_the_default_of_every_estimator():
    assert ImagePairClassifier().precision == "auto"
    assert ImageEmbedder().precision == "auto"
    assert AcceleratedImagePairClassifier(accelerator=None).precision == "auto"


def test_torch_still_has_the_private_cpu_flags_that_cpu_has_fast_bf16_reads():
    # cpu_has_fast_bf16 reads these private names of torch.cpu; were they renamed, it would
    # answer False on every CPU and precision="auto" would never choose bf16.
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        assert callable(getattr(torch.cpu, name, None)), name
