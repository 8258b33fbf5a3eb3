import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from safetensors.torch import save_file
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.utils import get_tags
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import (
    check_no_attributes_set_in_init,
    check_param_validation,
    check_set_params,
)
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit

from sklearn_imgpair import ImagePairClassifier, SiameseNet, ViewAugmentation
from sklearn_imgpair._images.validation import check_match_labels
from sklearn_imgpair._nn.backbone import create_backbone
from sklearn_imgpair._training.budget import TimeBudget

from conftest import TINY_SWIN, FakeClock, go_offline


def test_learns_a_separable_task(make_clf, separable_pairs):
    X, y = separable_pairs
    clf = make_clf(max_epochs=8, train_split=None).fit(X, y)
    assert clf.score(X, y) > 0.9


def test_default_threshold_predictions_are_calibrated(make_clf, separable_pairs):
    X, y = separable_pairs
    clf = make_clf(max_epochs=8, train_split=None).fit(X, y)
    proba = clf.predict_proba(X)[:, 1]
    accuracy = (clf.predict(X) == y).mean()
    best = max(((proba > t) == y).mean() for t in np.unique(proba))
    assert accuracy >= best - 0.05
    assert 0.1 < clf.predict(X).mean() < 0.9  # not "everything matches"


@pytest.mark.parametrize("make_X", [np.asarray, pd.DataFrame, list], ids=["array", "frame", "list"])
def test_input_forms_give_identical_results(fitted_clf, image_pairs, make_X):
    X, _ = image_pairs
    expected = fitted_clf.predict_proba(X)
    proba = fitted_clf.predict_proba(make_X(X.tolist()))
    assert proba.shape == (len(X), 2)
    assert_allclose(proba, expected, rtol=0, atol=0)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_fit_on_each_input_form_gives_the_same_model(make_clf, image_pairs):
    X, y = image_pairs
    frame = pd.DataFrame(X, columns=["Image1", "Image2"])
    probas = [make_clf(max_epochs=1).fit(data, y).predict_proba(X[:10])
              for data in (X, frame, X.tolist())]
    assert_allclose(probas[0], probas[1])
    assert_allclose(probas[0], probas[2])


def test_string_labels_and_match_label(make_clf, image_pairs):
    X, y = image_pairs
    labels = np.where(y == 1, "same", "different")
    clf = make_clf(max_epochs=1, match_label="same").fit(X, labels)
    assert clf.classes_.tolist() == ["different", "same"]
    predictions = clf.predict(X)
    assert set(predictions) <= {"different", "same"}
    proba = clf.predict_proba(X)
    assert_array_equal(predictions == "same", proba[:, 1] > 0.5)


def test_match_label_zero_flips_columns_and_decision_sign(make_clf, image_pairs):
    X, y = image_pairs
    clf_one = make_clf(max_epochs=1).fit(X, y)
    clf_zero = make_clf(max_epochs=1, match_label=0).fit(X, 1 - y)
    assert_allclose(clf_zero.predict_proba(X)[:, 0], clf_one.predict_proba(X)[:, 1], rtol=1e-6)
    assert_allclose(clf_zero.decision_function(X), -clf_one.decision_function(X), rtol=1e-6)
    assert_array_equal(clf_zero.predict(X), 1 - clf_one.predict(X))
    assert clf_zero.score(X, 1 - y) == pytest.approx(clf_one.score(X, y))


def test_decision_function_is_the_logit_of_predict_proba(fitted_clf, image_pairs):
    X, _ = image_pairs
    logits = fitted_clf.decision_function(X)
    assert_allclose(1 / (1 + np.exp(-logits)), fitted_clf.predict_proba(X)[:, 1], rtol=1e-5)


def test_predict_uses_threshold(fitted_clf, image_pairs):
    X, _ = image_pairs
    proba = fitted_clf.predict_proba(X)[:, 1]
    assert_array_equal(fitted_clf.predict(X), (proba > 0.5).astype(int))
    fitted_clf.set_params(threshold=float(np.median(proba)))
    try:
        assert_array_equal(fitted_clf.predict(X), (proba > np.median(proba)).astype(int))
    finally:
        fitted_clf.set_params(threshold=0.5)


def test_score_is_roc_auc(fitted_clf, image_pairs):
    X, y = image_pairs
    assert fitted_clf.score(X, y) == pytest.approx(
        roc_auc_score(y, fitted_clf.predict_proba(X)[:, 1]))


def test_both_images_share_one_backbone(fitted_clf, image_pairs):
    X, _ = image_pairs
    n_total = sum(p.numel() for p in fitted_clf.module_.parameters())
    n_backbone = sum(p.numel() for p in fitted_clf.module_.backbone.parameters())
    assert n_total == n_backbone + 2  # one backbone's weights plus the head's scale and bias
    swapped = X[:, ::-1]
    assert_allclose(fitted_clf.predict_proba(swapped), fitted_clf.predict_proba(X), rtol=1e-5)


def test_each_distinct_image_is_embedded_once(fitted_clf, image_pairs):
    X, _ = image_pairs
    seen = []
    hook = fitted_clf.module_.backbone.register_forward_hook(
        lambda module, args, output: seen.append(args[0].shape[0]))
    try:
        fitted_clf.predict_proba(np.concatenate([X, X]))
    finally:
        hook.remove()
    assert sum(seen) == len(np.unique(X))
    assert sum(seen) < X.size


def test_time_limit_stops_fit_and_keeps_a_usable_model(make_clf, image_pairs, monkeypatch):
    X, y = image_pairs
    clock = FakeClock(step=1.0)
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    clf = make_clf(max_epochs=1000, time_limit=30)
    clf.fit(X, y)
    callback = dict(clf.callbacks_)["time_limit"]
    assert callback.stopped_
    assert len(clf.history) < 1000
    assert clock.now <= 1 + 30  # no batch ended past the deadline on the fake clock
    assert clf.predict_proba(X).shape == (len(X), 2)


def test_time_limit_restores_the_best_validated_epoch(make_clf, image_pairs, monkeypatch):
    X, y = image_pairs
    split = ValidSplit(0.25, stratified=True, random_state=0)
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(FakeClock()))
    clf = make_clf(max_epochs=1000, time_limit=40, train_split=split)
    clf.fit(X, y)
    best_epoch = dict(clf.callbacks_)["early_stopping"].best_epoch_
    assert 1 <= best_epoch < len(clf.history)
    # Recomputing the validation AUC now gives the best epoch's value.
    _, dataset_valid = clf.get_split_datasets(X, (y == 1).astype(np.float32))
    logits = clf.forward(dataset_valid).numpy()
    targets = np.asarray([dataset_valid[i][1].item() for i in range(len(dataset_valid))])
    best_auc = clf.history[best_epoch - 1, "valid_auc"]
    assert roc_auc_score(targets, logits) == pytest.approx(best_auc, abs=1e-6)


def test_random_state_makes_fits_identical(make_clf, image_pairs):
    X, y = image_pairs
    first = make_clf(max_epochs=2, random_state=7).fit(X, y).predict_proba(X)
    second = make_clf(max_epochs=2, random_state=7).fit(X, y).predict_proba(X)
    other = make_clf(max_epochs=2, random_state=8).fit(X, y).predict_proba(X)
    assert_allclose(first, second, rtol=0, atol=0)
    assert not np.allclose(first, other)


def test_random_state_leaves_global_generators_alone(make_clf, image_pairs):
    X, y = image_pairs
    torch.manual_seed(11)
    np.random.seed(11)
    expected_torch, expected_numpy = torch.rand(1), np.random.rand()
    torch.manual_seed(11)
    np.random.seed(11)
    make_clf(max_epochs=1, random_state=3).fit(X, y)
    assert torch.rand(1) == expected_torch
    assert np.random.rand() == expected_numpy


def test_loads_backbone_weights_from_a_local_file(tmp_path, make_clf):
    saved = create_backbone("swin_tiny_patch4_window7_224", image_size=32, model_kwargs=TINY_SWIN)
    path = tmp_path / "backbone.safetensors"
    save_file(saved.state_dict(), str(path))
    clf = make_clf(weights_path=str(path)).initialize()
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(clf.module_.backbone.state_dict()[key], value)


def test_offline_pretrained_error_is_clear(monkeypatch, tmp_path, make_clf, image_pairs):
    import huggingface_hub.constants

    X, y = image_pairs
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    go_offline(monkeypatch)
    with pytest.raises(OSError, match="swin_tiny_patch4_window7_224.*Pass weights_path"):
        make_clf(pretrained=True).fit(X, y)


def test_unfitted_classifier_raises_not_fitted(make_clf, image_pairs):
    X, _ = image_pairs
    clf = make_clf()
    for method in (clf.predict, clf.predict_proba, clf.decision_function):
        with pytest.raises(NotFittedError):
            method(X)
    with pytest.raises(AttributeError, match="no classes_ before fit"):
        clf.classes_


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(image_size=3), "image_size"),
        (dict(time_limit=0), "time_limit"),
        (dict(pretrained="yes"), "pretrained"),
        (dict(model_kwargs=[1]), "model_kwargs"),
    ],
)
def test_fit_validates_parameters(make_clf, image_pairs, params, match):
    X, y = image_pairs
    with pytest.raises(InvalidParameterError, match=match):
        make_clf(**params).fit(X, y)


def test_fit_names_a_missing_image_before_training(make_clf, image_pairs, tmp_path):
    X, y = image_pairs
    X = X.copy()
    X[5, 1] = str(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match=r"X\[5, 1\]: .*missing.png"):
        make_clf().fit(X, y)


def test_predict_names_an_unreadable_image(fitted_clf, image_pairs, tmp_path):
    X, _ = image_pairs
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    X = X[:4].copy()
    X[2, 0] = str(broken)
    with pytest.raises(ValueError, match=r"X\[2, 0\]: Cannot read image .*broken.png"):
        fitted_clf.predict_proba(X)


def test_fit_does_not_modify_X_or_y(make_clf, image_pairs):
    X, y = image_pairs
    X_frame = pd.DataFrame(X.copy())
    y_copy = y.copy()
    make_clf(max_epochs=1).fit(X_frame, y_copy)
    pd.testing.assert_frame_equal(X_frame, pd.DataFrame(X))
    assert_array_equal(y_copy, y)


def test_clone_and_pickle(fitted_clf, image_pairs):
    X, _ = image_pairs
    twin = clone(fitted_clf)
    assert twin.get_params()["model_kwargs"] == fitted_clf.get_params()["model_kwargs"]
    assert not hasattr(twin, "module_")
    restored = pickle.loads(pickle.dumps(fitted_clf))
    assert_allclose(restored.predict_proba(X), fitted_clf.predict_proba(X), rtol=0, atol=0)
    assert_array_equal(restored.classes_, fitted_clf.classes_)


def test_fitted_attributes(fitted_clf):
    assert fitted_clf.n_features_in_ == 2
    assert fitted_clf.image_size_ == 32
    assert fitted_clf.embedding_dim_ == fitted_clf.module_.backbone.num_features
    assert {"train_loss", "valid_loss", "valid_auc"} <= set(fitted_clf.history[-1])


def test_skorch_parameters_work(make_clf, image_pairs):
    X, y = image_pairs
    epochs = []

    class Counter(Callback):
        def on_epoch_end(self, net, **kwargs):
            epochs.append(len(net.history))

    clf = make_clf(max_epochs=2, train_split=None, callbacks=[Counter()], batch_size=7,
                   optimizer=torch.optim.SGD, lr=0.05, optimizer__momentum=0.9)
    clf.fit(X, y)
    assert epochs == [1, 2]
    assert isinstance(clf.optimizer_, torch.optim.SGD)
    # skorch's optimizer__param_groups puts the head's group first, the rest after.
    head, backbone = clf.optimizer_.param_groups
    assert backbone["lr"] == 0.05 and backbone["momentum"] == 0.9
    assert head["lr"] == clf.head_lr and head["weight_decay"] == 0.0
    assert {id(p) for p in head["params"]} == {id(p) for p in clf.module_.head.parameters()}
    assert "valid_auc" not in clf.history[-1]
    assert clf.history[-1, "train_batch_count"] == int(np.ceil(len(X) / 7))


def test_verbose_prints_an_epoch_table(make_clf, image_pairs, capsys):
    X, y = image_pairs
    make_clf(max_epochs=2, verbose=1).fit(X, y)
    out = capsys.readouterr().out
    assert "valid_auc" in out and "train_loss" in out


def test_partial_fit_continues_training(make_clf, image_pairs):
    X, y = image_pairs
    clf = make_clf(max_epochs=1).fit(X, y)
    before = clf.predict_proba(X)
    clf.partial_fit(X, y)
    assert len(clf.history) == 2
    assert not np.allclose(before, clf.predict_proba(X))
    with pytest.raises(ValueError, match=r"labels \[7\] not seen"):
        clf.partial_fit(X[:2], [7, 7])


def test_fit_returns_self_and_refit_starts_over(make_clf, image_pairs):
    X, y = image_pairs
    clf = make_clf(max_epochs=1)
    assert clf.fit(X, y) is clf
    first = clf.predict_proba(X)
    assert clf.fit(X, y) is clf
    assert len(clf.history) == 1  # a second fit re-initialises, as in scikit-learn
    assert_allclose(clf.predict_proba(X), first, rtol=0, atol=0)


def test_skorch_scoring_callbacks_work(make_clf, image_pairs):
    from skorch.callbacks import EpochScoring

    X, y = image_pairs
    clf = make_clf(max_epochs=1, callbacks=[
        EpochScoring("roc_auc", name="skorch_auc", lower_is_better=False)])
    clf.fit(X, y)
    assert clf.history[-1, "skorch_auc"] == pytest.approx(clf.history[-1, "valid_auc"])


def test_default_callbacks_reach_skorch_through_its_private_property(make_clf):
    # skorch has no public hook for default callbacks: the classifier overrides
    # NeuralNet._default_callbacks, which skorch reads in get_default_callbacks
    # and in get_params. This fails loudly if skorch stops doing so.
    from skorch import NeuralNet

    assert isinstance(NeuralNet.__dict__.get("_default_callbacks"), property)
    clf = make_clf()
    names = [name for name, _ in clf.get_default_callbacks()]
    assert names == ["epoch_timer", "lr_schedule", "train_loss", "valid_loss", "valid_auc",
                     "early_stopping", "calibration", "time_limit", "print_log"]
    assert clf.get_params()["callbacks__early_stopping__patience"] == 5
    clf.set_params(callbacks__early_stopping__patience=2).initialize()
    assert dict(clf.callbacks_)["early_stopping"].patience == 2


def test_device_auto_is_resolved_for_skorch_and_kept_as_a_parameter(make_clf, image_pairs):
    X, y = image_pairs
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    clf = make_clf(device="auto", max_epochs=1, train_split=None, pair_mining="none")
    assert clf.device == expected and clf.get_params()["device"] == "auto"
    assert clone(clf).get_params()["device"] == "auto"
    clf.fit(X[:16], y[:16])
    assert next(clf.module_.parameters()).device.type == expected
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.get_params()["device"] == "auto" and restored.device == expected
    assert_allclose(restored.predict_proba(X[:16]), clf.predict_proba(X[:16]), rtol=1e-6)


def test_the_estimators_share_one_set_of_runtime_constraints():
    from sklearn_imgpair import AcceleratedImagePairClassifier, ImageEmbedder, ImagePairClassifier
    from sklearn_imgpair._nn.device import RUNTIME_PARAMETER_CONSTRAINTS

    for estimator in (ImagePairClassifier, AcceleratedImagePairClassifier, ImageEmbedder):
        for name, constraint in RUNTIME_PARAMETER_CONSTRAINTS.items():
            assert estimator._parameter_constraints[name] is constraint, (estimator, name)


@pytest.mark.parametrize("params, error, match", [
    (dict(device="tpu-ish"), ValueError, "device='tpu-ish' is not a torch device"),
    (dict(device=3.5), InvalidParameterError, "'device' parameter"),
    (dict(num_workers=-1), InvalidParameterError, "'num_workers' parameter"),
    (dict(precision="fp8"), InvalidParameterError, "'precision' parameter"),
    (dict(random_state="seed"), InvalidParameterError, "'random_state' parameter"),
])
def test_runtime_parameters_are_validated_alike(make_clf, params, error, match):
    from sklearn_imgpair import ImageEmbedder

    clf = make_clf(**params)
    with pytest.raises(error, match=match):
        clf.initialize()
    assert not clf.initialized_  # refused before anything was built
    with pytest.raises(error, match=match):
        ImageEmbedder(pretrained=False, model_kwargs=dict(TINY_SWIN), image_size=32,
                      **params).fit()


def test_reading_the_images_counts_against_the_time_budget(make_clf, image_pairs, monkeypatch):
    # Reading takes 30 % of a 100 s budget on the fake clock: training still
    # ends with the learning rate at the schedule's floor, not at 70 % of it.
    from sklearn_imgpair._training import fitting

    X, y = image_pairs
    clock = FakeClock(step=0.5)
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    original = fitting.pair_dataset

    def slow_reading(*args, **kwargs):
        clock.now += 30.0
        return original(*args, **kwargs)

    monkeypatch.setattr(fitting, "pair_dataset", slow_reading)
    factors = []

    class RecordRate(Callback):
        def on_batch_end(self, net, training=False, **kwargs):
            if training:
                factors.append(net.optimizer_.param_groups[-1]["lr"] / net.lr)

    clf = make_clf(max_epochs=10_000, time_limit=100, train_split=None, pair_mining="none",
                   callbacks=[("rate", RecordRate())])
    clf.fit(X, y)
    assert dict(clf.callbacks_)["time_limit"].stopped_
    floor = dict(clf.callbacks_)["lr_schedule"].floor
    assert factors[-1] == pytest.approx(floor, rel=0.5)  # counted from training: 0.24
    assert factors[0] < 0.5 * max(factors)  # and it warmed up when training started


def test_a_refit_that_fails_before_building_keeps_the_fitted_estimator(make_clf, image_pairs,
                                                                       monkeypatch):
    from sklearn_imgpair._training import precision

    X, y = image_pairs
    clf = make_clf(max_epochs=1, train_split=None, pair_mining="none").fit(X, y)
    expected, module = clf.predict_proba(X), clf.module_
    labels = np.where(y == 1, "same", "other")

    def refuse(precision, device):
        raise ValueError("this device cannot")

    monkeypatch.setattr(precision, "check_precision", refuse)
    with pytest.raises(ValueError, match="this device cannot"):
        clf.set_params(match_label="same").fit(X, labels)
    assert clf.module_ is module and clf.classes_.tolist() == [0, 1]
    assert clf.time_budget_.ended
    assert_array_equal(clf.set_params(match_label=1).predict_proba(X), expected)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_a_first_fit_that_fails_before_building_leaves_no_classes(make_clf, image_pairs,
                                                                  monkeypatch, method):
    from sklearn_imgpair._training import precision

    X, y = image_pairs

    def refuse(precision, device):
        raise ValueError("this device cannot")

    monkeypatch.setattr(precision, "check_precision", refuse)
    clf = make_clf(max_epochs=1)
    with pytest.raises(ValueError, match="this device cannot"):
        getattr(clf, method)(X, y)
    assert "classes_" not in vars(clf) and clf.time_budget_.ended
    with pytest.raises(NotFittedError):
        clf.predict_proba(X)


# ----------------------------------------------------------------------
# scikit-learn's estimator contract
# ----------------------------------------------------------------------


def test_skorch_still_lists_private_attributes_as_parameters():
    # skorch's NeuralNet overrides scikit-learn's private _get_param_names to list
    # every attribute not ending in "_", its own bookkeeping (_params_to_validate)
    # included; ImagePairClassifier overrides it again to leave private names out.
    # This fails loudly if skorch renames the method or stops listing parameters
    # through it (the override would be dead), or lists only parameters (it can go).
    from skorch import NeuralNet

    assert "_get_param_names" in vars(NeuralNet)
    net = NeuralNet(SiameseNet, torch.nn.BCEWithLogitsLoss)
    assert "_params_to_validate" in net.get_params(deep=False)
    assert "_params_to_validate" in net._get_param_names()


# skorch's set_params builds the callbacks at once from the current ``callbacks``,
# which check_set_params has set to -inf: later calls raise, and the check warns.
@pytest.mark.filterwarnings("ignore:.*occurred during set_params:UserWarning")
@pytest.mark.filterwarnings("ignore:Estimator's parameters changed after set_params")
def test_private_attributes_are_not_parameters(make_clf, fitted_clf):
    clf = make_clf(optimizer__momentum=0.9)
    params = clf.get_params(deep=False)
    assert [name for name in params if name.startswith("_")] == []
    assert params["optimizer__momentum"] == 0.9 and params["iterator_train__shuffle"] is True
    with pytest.raises(ValueError, match="Invalid parameter '_params_to_validate'"):
        clf.set_params(_params_to_validate=set())
    assert set(clone(fitted_clf).get_params(deep=False)) == set(fitted_clf.get_params(deep=False))
    check_set_params("ImagePairClassifier", clf)
    clf.set_params(lr=0.1)  # crashed after check_set_params had set _params_to_validate=-inf


def test_init_sets_nothing_but_parameters(make_clf):
    check_no_attributes_set_in_init("ImagePairClassifier", ImagePairClassifier())
    clf = make_clf(augment=ViewAugmentation())
    assert [name for name in vars(clf) if name.endswith("_")] == []
    # skorch's state reads as skorch documents it, before and after initialisation.
    assert clf.initialized_ is False and clf.history_ is None and clf.virtual_params_ == {}
    clf.initialize()
    assert clf.initialized_ and clf.history is clf.history_ and len(clf.history_) == 0
    assert any(key.startswith("optimizer__") for key in clf.virtual_params_)


def test_skorch_state_survives_warm_start_pickling_and_clone(make_clf, image_pairs):
    X, y = image_pairs
    clf = make_clf(max_epochs=1, warm_start=True, train_split=None, pair_mining="none")
    clf.fit(X[:40], y[:40]).fit(X[:40], y[:40])
    assert len(clf.history) == 2  # the second fit went on from the first
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.initialized_ and len(restored.history_) == 2
    assert_array_equal(restored.predict_proba(X[:8]), clf.predict_proba(X[:8]))
    twin = clone(clf)
    assert not twin.initialized_ and twin.history_ is None
    assert [name for name in vars(twin) if name.endswith("_")] == []


def test_augment_module_can_be_set_after_construction(make_clf):
    augment = ViewAugmentation(min_scale=0.8)
    clf = make_clf()
    assert clf.set_params(augment=augment).augment is augment
    assert clf.initialize().module_.augment is augment
    clf.set_params(augment=False).initialize()
    assert clf.module_.augment is None
    assert "augment" not in clf.prefixes_  # a parameter, not a network component


def test_grid_search_over_augment(make_clf, image_pairs):
    X, y = image_pairs
    clf = make_clf(max_epochs=1, train_split=None, pair_mining="none")
    grid = GridSearchCV(clf, {"augment": [False, ViewAugmentation(min_scale=0.8)]}, cv=2,
                        error_score="raise")
    grid.fit(X[:40], y[:40])
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert grid.best_estimator_.predict_proba(X[:4]).shape == (4, 2)


def test_tags_describe_a_table_of_path_strings():
    tags = get_tags(ImagePairClassifier(random_state=None))
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    assert not tags.classifier_tags.multi_class
    # non_deterministic means "differs for a fixed random_state"; fits on CPU do not.
    assert not tags.non_deterministic


def test_every_parameter_is_validated_before_X_is_read():
    check_param_validation("ImagePairClassifier", ImagePairClassifier())


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("y", [None, np.linspace(0.1, 0.9, 10), np.ones(10), np.arange(10) % 3],
                         ids=["None", "continuous", "one label", "three labels"])
def test_labels_are_checked_before_the_shape_and_cells_of_X(make_clf, y, method):
    # scikit-learn's checks of bad labels pass numeric X of any width and expect
    # the labels' error.
    X = np.random.RandomState(0).uniform(size=(10, 3))
    with pytest.raises((TypeError, ValueError)) as expected:
        check_match_labels(y, 1, len(X))
    with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
        getattr(make_clf(), method)(X, y)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_fit_refuses_sample_weight(make_clf, image_pairs, method):
    X, y = image_pairs
    clf = make_clf(max_epochs=1, train_split=None, freeze_backbone=True)
    with pytest.raises(TypeError, match="sample_weight.* not supported"):
        getattr(clf, method)(X, y, sample_weight=np.ones(len(y)))
    assert not hasattr(clf, "module_")


def test_score_takes_sample_weight(fitted_clf, image_pairs):
    X, y = image_pairs
    half = len(y) // 2
    weights = (np.arange(len(y)) < half).astype(float)
    assert fitted_clf.score(X, y, sample_weight=weights) == pytest.approx(
        fitted_clf.score(X[:half], y[:half]))
