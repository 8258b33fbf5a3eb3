import os
import socket

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

from sklearn_imgpair._nn import backbone as _backbone
from sklearn_imgpair._nn.backbone import create_backbone, resolve_preprocessing

from conftest import TINY_SWIN, go_offline

MODEL = "swin_tiny_patch4_window7_224"


def _tiny(**kwargs):
    return create_backbone(MODEL, image_size=32, model_kwargs=TINY_SWIN, **kwargs)


def _assert_same_weights(a, b):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0)


def test_create_backbone_tiny_swin_is_a_headless_feature_extractor():
    backbone = _tiny()
    assert 15_000 < sum(p.numel() for p in backbone.parameters()) < 25_000
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, backbone.num_features)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_create_backbone_loads_a_local_checkpoint(tmp_path, suffix):
    source = _tiny()
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        save_file(source.state_dict(), str(path))
    torch.manual_seed(123)  # a fresh random init would differ from source
    loaded = _tiny(weights_path=path)
    _assert_same_weights(source, loaded)


def test_create_backbone_drops_a_classifier_head_in_the_checkpoint(tmp_path):
    import timm

    with_head = timm.create_model(MODEL, img_size=32, num_classes=7, **TINY_SWIN)
    path = tmp_path / "with_head.pth"
    torch.save(with_head.state_dict(), path)
    loaded = _tiny(weights_path=path)
    torch.testing.assert_close(loaded.patch_embed.proj.weight, with_head.patch_embed.proj.weight)
    assert loaded(torch.zeros(1, 3, 32, 32)).shape == (1, loaded.num_features)


def test_create_backbone_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights_path does not exist"):
        _tiny(weights_path=tmp_path / "nope.pth")


def test_create_backbone_unknown_model():
    with pytest.raises(ValueError, match="Unknown timm model 'not_a_model'"):
        create_backbone("not_a_model")


def _empty_hub_cache(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))


def test_pretrained_offline_fails_fast_with_advice(monkeypatch, tmp_path):
    _empty_hub_cache(monkeypatch, tmp_path)
    go_offline(monkeypatch)

    def no_network(*args, **kwargs):
        raise AssertionError("the hub must not be contacted when offline")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(OSError) as info:
        _tiny(pretrained=True)
    message = str(info.value)
    assert MODEL in message
    assert "weights_path=" in message and "pretrained=False" in message


def test_pretrained_unreachable_hub_fails_without_downloading(monkeypatch, tmp_path):
    _empty_hub_cache(monkeypatch, tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    attempts = []

    def unreachable(address, timeout=None):
        attempts.append((address, timeout))
        raise OSError("network is unreachable")

    def download(*args, **kwargs):
        raise AssertionError("no download may start when the hub is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(_backbone.timm, "create_model", download)
    with pytest.raises(OSError, match="cannot be reached"):
        _tiny(pretrained=True)
    assert attempts == [(("huggingface.co", 443), _backbone._HUB_PROBE_TIMEOUT)]


def test_offline_mode_is_huggingface_hubs_own_setting(monkeypatch, tmp_path):
    # huggingface_hub reads HF_HUB_OFFLINE at import; its constant is what counts.
    _empty_hub_cache(monkeypatch, tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        _tiny(pretrained=True)


def test_the_hub_endpoint_is_huggingface_hubs(monkeypatch, tmp_path):
    _empty_hub_cache(monkeypatch, tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://hub.example:8080")
    attempts = []

    def unreachable(address, timeout=None):
        attempts.append(address)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(OSError, match="cannot be reached"):
        _tiny(pretrained=True)
    assert attempts == [("hub.example", 8080)]


def _no_network(*args, **kwargs):
    raise AssertionError("the hub must not be contacted when offline")


def test_pretrained_uses_the_local_hub_cache(monkeypatch, tmp_path):
    _empty_hub_cache(monkeypatch, tmp_path)
    go_offline(monkeypatch)
    source = _tiny()
    # The layout huggingface_hub uses for a cached download.
    repo = tmp_path / "hub" / "models--timm--swin_tiny_patch4_window7_224.ms_in1k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))

    torch.manual_seed(321)
    _assert_same_weights(source, _tiny(pretrained=True))


def test_resolve_preprocessing_uses_our_image_size_and_model_stats():
    backbone = _tiny()
    config = resolve_preprocessing(backbone, image_size=48)
    assert config["image_size"] == 48
    assert config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert config["std"] == pytest.approx((0.229, 0.224, 0.225))


def test_resolve_preprocessing_reads_the_size_the_model_was_built_for():
    backbone = create_backbone(MODEL, model_kwargs={**TINY_SWIN, "img_size": 40})
    assert resolve_preprocessing(backbone)["image_size"] == 40


def test_create_backbone_cnn_ignores_image_size():
    backbone = create_backbone("resnet18", image_size=48)
    assert backbone(torch.zeros(1, 3, 48, 48)).shape == (1, 512)


def test_create_backbone_reads_a_checkpoint_once_per_file_version(tmp_path):
    from sklearn_imgpair._nn.backbone import _read_checkpoint

    source = _tiny()
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    _read_checkpoint.cache_clear()
    first, second = _tiny(weights_path=path), _tiny(weights_path=path)
    assert _read_checkpoint.cache_info().misses == 1
    _assert_same_weights(source, first)
    _assert_same_weights(source, second)
    # The model's config names the file; it does not hold a copy of the weights.
    assert "state_dict" not in second.pretrained_cfg
    assert second.pretrained_cfg["file"] == str(path)

    changed = _tiny()
    torch.save(changed.state_dict(), path)
    os.utime(path, ns=(0, 1))  # a new version of the file, even within the clock's resolution
    _assert_same_weights(changed, _tiny(weights_path=path))
    assert _read_checkpoint.cache_info().misses == 2
