import torch

from sklearn_imgpair import ViewAugmentation


def _images():
    return torch.rand(6, 3, 16, 16)


def test_eval_mode_returns_the_input_unchanged():
    augment = ViewAugmentation().eval()
    images = _images()
    assert augment(images) is images


def test_training_mode_changes_images_but_keeps_shape_and_range():
    augment = ViewAugmentation().train()
    images = _images()
    out = augment(images)
    assert out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, images)


def test_all_strengths_zero_is_the_identity():
    augment = ViewAugmentation(min_scale=1.0, max_rotation=0.0, flip=False,
                               brightness=0.0, contrast=0.0).train()
    images = _images()
    torch.testing.assert_close(augment(images), images, atol=1e-5, rtol=0)


def test_flip_only_mirrors_images():
    augment = ViewAugmentation(min_scale=1.0, max_rotation=0.0, flip=True,
                               brightness=0.0, contrast=0.0).train()
    images = _images()
    out = augment(images)
    for original, result in zip(images, out):
        same = torch.allclose(result, original, atol=1e-5)
        mirrored = torch.allclose(result, original.flip(-1), atol=1e-5)
        assert same or mirrored


def test_crop_keeps_most_of_the_object():
    # A centred white square on black stays mostly visible after any crop.
    images = torch.zeros(32, 3, 32, 32)
    images[:, :, 12:20, 12:20] = 1.0
    out = ViewAugmentation(brightness=0.0, contrast=0.0).train()(images)
    visible = (out > 0.5).flatten(1).sum(dim=1)
    assert (visible >= 0.5 * 64 * 3).all()
