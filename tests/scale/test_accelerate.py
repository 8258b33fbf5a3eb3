"""AcceleratedImagePairClassifier: on one CPU process it trains like the plain classifier."""

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import (
    check_no_attributes_set_in_init,
    check_param_validation,
    check_set_params,
)

pytest.importorskip(
    "accelerate",
    reason=('the Accelerate path needs the distributed extra: '
            'pip install "sklearn-imgpair[distributed]"'),
)
from accelerate import Accelerator  # noqa: E402

from sklearn_imgpair import (  # noqa: E402
    AcceleratedImagePairClassifier,
    ImageEmbedder,
    ImagePairClassifier,
    SiameseNet,
    ViewAugmentation,
)

from conftest import make_tiny_classifier  # noqa: E402


def make_accelerated(**params):
    """The tiny classifier of ``make_tiny_classifier``, trained through Accelerate on the CPU."""
    plain = make_tiny_classifier(**params)
    return AcceleratedImagePairClassifier(accelerator=Accelerator(cpu=True),
                                          **plain.get_params(deep=False) | {"device": None})


@pytest.fixture(scope="module", params=["graph", "none"])
def fitted_pair(request, image_pairs):
    """A plain and an accelerated classifier fitted alike; tests must not mutate them."""
    X, y = image_pairs
    params = dict(pair_mining=request.param, max_epochs=2)
    return make_tiny_classifier(**params).fit(X, y), make_accelerated(**params).fit(X, y)


def test_accelerated_fit_predicts_exactly_like_the_plain_fit(fitted_pair, image_pairs):
    # One CPU process: the same batches, random draws and float operations in
    # the same order, so the models are identical, not merely close.
    plain, accelerated = fitted_pair
    X, _ = image_pairs
    assert_array_equal(accelerated.history[:, "train_loss"], plain.history[:, "train_loss"])
    assert_array_equal(accelerated.predict_proba(X), plain.predict_proba(X))
    assert_array_equal(accelerated.predict(X), plain.predict(X))


def test_accelerated_fit_unwraps_the_network(fitted_pair):
    _, accelerated = fitted_pair
    assert type(accelerated.module_) is SiameseNet
    assert not accelerated._wrapped_with_accelerator
    assert accelerated.module_.head.log_scale.dtype == torch.float32


def test_accelerated_classifier_pickles_and_predicts_the_same(fitted_pair, image_pairs):
    _, accelerated = fitted_pair
    X = image_pairs[0][:30]
    loaded = pickle.loads(pickle.dumps(accelerated))
    assert loaded.device is None
    assert_array_equal(loaded.predict_proba(X), accelerated.predict_proba(X))


def test_accelerated_classifier_saves_a_plain_classifier_file(fitted_pair, image_pairs,
                                                              tmp_path, recwarn):
    _, accelerated = fitted_pair
    X = image_pairs[0][:30]
    path = accelerated.save(tmp_path / "model.safetensors")
    assert not [w for w in recwarn if "cannot be saved" in str(w.message)]
    loaded = ImagePairClassifier.load(path)
    assert type(loaded) is ImagePairClassifier and loaded.device == "cpu"
    assert "accelerator" not in loaded.get_params()
    assert_array_equal(loaded.predict_proba(X), accelerated.predict_proba(X))
    with pytest.raises(TypeError, match="ImagePairClassifier.load"):
        AcceleratedImagePairClassifier.load(path)


def test_accelerated_network_goes_to_the_plain_estimators(fitted_pair, image_pairs):
    plain, accelerated = fitted_pair
    X = image_pairs[0][:30]
    assert_array_equal(ImageEmbedder(classifier=accelerated).fit().transform(X[:, 0]),
                       ImageEmbedder(classifier=plain).fit().transform(X[:, 0]))
    # A plain classifier with the accelerated one's weights predicts the same.
    handed_on = make_tiny_classifier().initialize()
    handed_on.module_.load_state_dict(accelerated.module_.state_dict())
    handed_on.classes_ = accelerated.classes_
    assert_allclose(handed_on.predict_proba(X), accelerated.predict_proba(X), rtol=0, atol=0)


def test_accelerated_classifier_is_an_image_pair_classifier():
    clf = make_accelerated()
    assert isinstance(clf, ImagePairClassifier)
    assert clf.get_params()["accelerator"] is clf.accelerator


def test_accelerated_classifier_rejects_a_non_accelerator(image_pairs):
    X, y = image_pairs
    clf = make_accelerated()
    clf.set_params(accelerator="cpu")
    with pytest.raises(TypeError, match="accelerator must be an accelerate.Accelerator; got str"):
        clf.fit(X, y)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_accelerated_classifier_leaves_mixed_precision_to_the_accelerator(image_pairs, precision):
    # One mixed-precision path: the plain classifier's autocast and fp16 loss
    # scaler never run beside the accelerator's.
    X, y = image_pairs
    clf = make_accelerated(max_epochs=1, precision=precision)
    with pytest.raises(ValueError, match="mixed_precision="):
        clf.fit(X, y)
    assert not clf.initialized_


def test_accelerated_classifier_keeps_quiet_with_verbose_0(image_pairs, capsys):
    X, y = image_pairs
    make_accelerated(max_epochs=1, pair_mining="none").fit(X[:40], y[:40])
    assert capsys.readouterr().out == ""
    make_accelerated(max_epochs=1, pair_mining="none", verbose=1).fit(X[:40], y[:40])
    assert "train_loss" in capsys.readouterr().out


def test_accelerated_fit_places_identity_batches_on_the_accelerator_device(image_pairs):
    X, y = image_pairs
    clf = make_accelerated(max_epochs=1).initialize()
    dataset = clf.get_dataset(X, y)
    batch_X, batch_y = next(iter(clf.get_iterator(dataset, training=True)))
    device = clf.accelerator.device
    assert batch_X["views"].device == device and batch_y.device == device
    assert len(batch_X["views"]) == len(batch_y) == clf.batch_size
    np.testing.assert_array_less(-1, batch_X["view_identities"].cpu().numpy())


# skorch's set_params fails once check_set_params has set callbacks=-inf (see test_classifier).
@pytest.mark.filterwarnings("ignore:.*occurred during set_params:UserWarning")
@pytest.mark.filterwarnings("ignore:Estimator's parameters changed after set_params")
@pytest.mark.parametrize("check", [check_no_attributes_set_in_init, check_set_params,
                                   check_param_validation])
def test_accelerated_classifier_passes_scikit_learn_parameter_checks(check):
    check("AcceleratedImagePairClassifier",
          AcceleratedImagePairClassifier(accelerator=Accelerator(cpu=True)))


def test_accelerated_classifier_constraints_extend_the_plain_ones():
    plain = ImagePairClassifier._parameter_constraints
    accelerated = AcceleratedImagePairClassifier._parameter_constraints
    assert set(accelerated) - set(plain) == {"accelerator", "unwrap_after_train",
                                             "callbacks__print_log__sink"}
    assert all(accelerated[name] is plain[name] for name in plain)


def test_accelerated_classifier_tags_are_the_plain_ones():
    tags = get_tags(AcceleratedImagePairClassifier(accelerator=Accelerator(cpu=True)))
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    assert not tags.classifier_tags.multi_class and not tags.non_deterministic


def test_accelerated_classifier_takes_an_augmentation_module_after_construction(image_pairs):
    X, y = image_pairs
    clf = make_accelerated(max_epochs=1, pair_mining="none", train_split=None)
    augment = ViewAugmentation(min_scale=0.8)
    clf.set_params(augment=augment).fit(X[:40], y[:40])
    assert clf.module_.augment is augment and clf.initialized_


def test_the_print_log_sink_is_resolved_on_the_callback_not_the_parameter(image_pairs):
    # skorch's AccelerateMixin._initialize_callbacks rewrote the parameter from
    # "auto" to accelerator.print in fit; the class overrides that private hook.
    # This fails if skorch renames the hook or stops calling it.
    from skorch import NeuralNet
    from skorch.hf import AccelerateMixin

    assert "_initialize_callbacks" in vars(NeuralNet)
    assert "_initialize_callbacks" in vars(AccelerateMixin)
    X, y = image_pairs
    clf = make_accelerated(max_epochs=1, pair_mining="none").fit(X[:16], y[:16])
    assert clf.get_params()["callbacks__print_log__sink"] == "auto"
    assert dict(clf.callbacks_)["print_log"].sink is print  # this is the main process
    clf.set_params(callbacks__print_log__sink=np.array([1.0, 4.0]))  # no comparison error
