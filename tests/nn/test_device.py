"""device="auto": CUDA, then MPS, then the CPU; model files load where they are read."""

import pytest
import torch

from sklearn_imgpair import ImageEmbedder, ImagePairClassifier
from sklearn_imgpair._nn.device import check_device, loadable_device, resolve_device


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
