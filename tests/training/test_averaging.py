import copy

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from timm.utils import ModelEmaV3

from sklearn_imgpair import WeightAveraging


def _weights(module):
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _assert_same(first, second):
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)


class Spy(Callback):
    """Records the module's weights after every training step and during validation."""

    def initialize(self):
        self.after_steps, self.in_validation, self.epoch_begins = [], [], []
        return self

    def on_epoch_begin(self, net, **kwargs):
        self.epoch_begins.append(_weights(net.module_))

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.after_steps.append(_weights(net.module_))
        elif len(self.in_validation) < len(net.history):  # first validation batch
            self.in_validation.append(_weights(net.module_))


def _expected_average(steps, decay, warmup_power):
    """timm's warm-up EMA of the weights after each step, by hand."""
    average = copy.deepcopy(steps[0])
    averages = []
    for step, weights in enumerate(steps, start=1):
        d = max(0, step - 1)
        d = 0.0 if d <= 0 else min(1 - (1 + d) ** -warmup_power, decay)
        for name, value in weights.items():
            if value.is_floating_point():
                average[name] = average[name] * d + value * (1 - d)
            else:
                average[name] = value.clone()
        averages.append(copy.deepcopy(average))
    return averages


def test_without_validation_the_average_replaces_the_trained_weights(make_clf, image_pairs):
    X, y = image_pairs
    spy = Spy()
    clf = make_clf(train_split=None, max_epochs=2, lr=0.05,
                   callbacks=[("spy", spy), ("weight_averaging", WeightAveraging(decay=0.9))])
    clf.fit(X, y)
    expected = _expected_average(spy.after_steps, decay=0.9, warmup_power=0.75)[-1]
    final = _weights(clf.module_)
    for name, value in final.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    # The average differs from the last step's weights: something was averaged.
    assert any(not torch.equal(final[name], spy.after_steps[-1][name]) for name in final
               if final[name].is_floating_point())
    # The second epoch trained on from the first epoch's trained weights, not the average.
    _assert_same(spy.epoch_begins[1], spy.after_steps[len(spy.after_steps) // 2 - 1])


def test_validation_scores_selects_and_restores_the_average(make_clf, image_pairs):
    X, y = image_pairs
    spy = Spy()
    averaging = WeightAveraging(decay=0.8)
    clf = make_clf(max_epochs=3, lr=0.05, callbacks=[("weight_averaging", averaging),
                                                     ("spy", spy)])
    clf.fit(X, y)
    steps_per_epoch = len(spy.after_steps) // 3
    averages = _expected_average(spy.after_steps, decay=0.8, warmup_power=0.75)
    for epoch in range(3):
        # Validation ran on the average of the steps so far...
        last_step = (epoch + 1) * steps_per_epoch - 1
        for name, value in spy.in_validation[epoch].items():
            torch.testing.assert_close(value, averages[last_step][name], rtol=1e-5, atol=1e-6)
        # ...and the next epoch trained on from the trained weights.
        if epoch < 2:
            _assert_same(spy.epoch_begins[epoch + 1], spy.after_steps[last_step])
    best = dict(clf.callbacks_)["early_stopping"].best_epoch_
    assert clf.history[-1, "restored_epoch"] == best
    # The best epoch's average is restored (the head, then calibrated, aside).
    restored, validated = _weights(clf.module_), spy.in_validation[best - 1]
    backbone = [name for name in restored if not name.startswith("head.")]
    _assert_same({k: restored[k] for k in backbone}, {k: validated[k] for k in backbone})
    assert averaging.average_ is None and averaging.steps_ == len(spy.after_steps)


def test_timm_ema_decay_schedule_is_what_the_callback_documents():
    # WeightAveraging documents timm's warm-up; this fails if timm changes it.
    ema = ModelEmaV3(torch.nn.Linear(2, 2), decay=0.99, use_warmup=True, warmup_power=0.75)
    assert ema.get_decay(1) == 0.0
    assert ema.get_decay(5) == pytest.approx(1 - 5 ** -0.75)
    assert ema.get_decay(10_000) == 0.99


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_bad_decay_is_refused_when_training_starts(make_clf, image_pairs, decay):
    X, y = image_pairs
    clf = make_clf(max_epochs=1, callbacks=[("weight_averaging", WeightAveraging(decay))])
    with pytest.raises(ValueError, match="decay must be in"):
        clf.fit(X, y)


class StopInValidation(Callback):
    """Stops training (as TimeLimit does) in the first validation batch of ``epoch``."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, net, training=False, **kwargs):
        if not training and len(net.history) == self.epoch:
            from sklearn_imgpair import StopTraining
            raise StopTraining


def test_a_stop_during_validation_keeps_the_validated_average(make_clf, image_pairs):
    X, y = image_pairs
    spy = Spy()
    clf = make_clf(max_epochs=3, lr=0.05, callbacks__calibration=None,
                   callbacks=[("weight_averaging", WeightAveraging(decay=0.8)), ("spy", spy),
                              ("stop", StopInValidation(epoch=2))])
    clf.fit(X, y)
    # Epoch 2's validation was cut short while the average was swapped in; the
    # restored weights are epoch 1's validated average, not epoch 2's.
    assert clf.history[-1, "restored_epoch"] == 1
    _assert_same(_weights(clf.module_), spy.in_validation[0])


def test_a_warm_start_trains_through_the_linear_head_again(make_clf, image_pairs):
    X, y = image_pairs

    class LinkSpy(Callback):
        def initialize(self):
            self.links = set()
            return self

        def on_batch_end(self, net, training=False, **kwargs):
            if training:
                self.links.add(net.module_.head.link)

    spy = LinkSpy()
    clf = make_clf(warm_start=True, callbacks=[("link", spy)]).fit(X, y)
    assert clf.module_.head.link == "atanh" and spy.links == {"linear"}
    probability = clf.predict_proba(X[:5])
    clf.fit(X, y)  # trains on from the calibrated head's linear tangent
    assert spy.links == {"linear"} and clf.module_.head.link == "atanh"
    assert not np.array_equal(probability, clf.predict_proba(X[:5]))
