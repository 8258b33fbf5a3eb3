import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from skorch.history import History

from sklearn_imgpair._nn.siamese import CosineMatchHead
from sklearn_imgpair._training.budget import StopTraining, TimeBudget, TimeLimit
from sklearn_imgpair._training.calibration import HeadCalibration
from sklearn_imgpair._training.schedule import CosineSchedule
from sklearn_imgpair._training.selection import AucEarlyStopping, valid_roc_auc

from conftest import FakeClock


class _Net:
    """A net whose fit started a budget of ``time_limit`` seconds on ``clock``."""

    def __init__(self, time_limit, verbose=0, clock=None, spent=0.0):
        self.time_limit = time_limit
        self.verbose = verbose
        clock = clock or FakeClock(step=1.0)
        self.time_budget_ = TimeBudget(time_limit, clock=clock)
        self.time_budget_.started -= spent  # work done before training, e.g. reading images


def _run_batches(callback, net, n_batches):
    callback.initialize()
    callback.on_train_begin(net)
    callback.on_epoch_begin(net)
    done = 0
    try:
        for _ in range(n_batches):
            callback.on_batch_end(net, training=True)
            done += 1
    except KeyboardInterrupt:
        pass
    return done


def test_time_limit_stops_before_the_next_step_would_overrun():
    # Each clock reading takes 1 s on the fake clock; the budget is 10 s from its start.
    callback = TimeLimit()
    done = _run_batches(callback, _Net(time_limit=10), n_batches=100)
    # The budget starts at t=1 (deadline t=11), training at t=2; batch k ends
    # at t=k+2. The 8th batch ends at t=10, where one more 1 s batch would
    # reach the deadline: it is the last one, and its on_batch_end raises.
    assert callback.stopped_
    assert done + 1 == 8


def test_time_limit_counts_work_done_before_training():
    fresh, late = TimeLimit(), TimeLimit()
    n_fresh = _run_batches(fresh, _Net(time_limit=20), n_batches=100)
    n_late = _run_batches(late, _Net(time_limit=20, spent=6.0), n_batches=100)
    assert n_late == n_fresh - 6


def test_time_limit_raises_stop_training():
    callback = TimeLimit()
    callback.initialize()
    net = _Net(time_limit=3)
    callback.on_train_begin(net)
    callback.on_epoch_begin(net)
    with pytest.raises(StopTraining):
        for _ in range(10):
            callback.on_batch_end(net, training=True)


def test_time_limit_none_never_stops():
    callback = TimeLimit()
    assert _run_batches(callback, _Net(time_limit=None, clock=FakeClock(step=100.0)),
                        n_batches=50) == 50
    assert not callback.stopped_


def test_time_limit_reports_when_verbose():
    messages = []
    callback = TimeLimit(sink=messages.append)
    _run_batches(callback, _Net(time_limit=5, verbose=1), n_batches=50)
    assert messages == ["Stopping: time_limit=5s is reached."]


class _CachedNet:
    def __init__(self, logits):
        self.logits = torch.tensor(logits)

    def forward(self, X):
        return self.logits


def test_valid_roc_auc_matches_sklearn():
    logits, y = [0.3, -1.0, 2.0, 0.1], np.array([1.0, 0.0, 1.0, 0.0])
    assert valid_roc_auc(_CachedNet(logits), None, y) == pytest.approx(roc_auc_score(y, logits))


def test_valid_roc_auc_single_class_is_nan():
    assert np.isnan(valid_roc_auc(_CachedNet([0.1, 0.2]), None, np.ones(2)))


class _HistoryNet:
    def __init__(self):
        self.history = History()
        self.verbose = 0
        self.module_ = torch.nn.Linear(1, 1)


@pytest.mark.parametrize(
    "scores, best_epoch",
    [
        ([(0.8, 0.5), (0.9, 0.6), (0.85, 0.3)], 2),  # higher AUC wins over lower loss
        ([(1.0, 0.5), (1.0, 0.2), (1.0, 0.4)], 2),  # tie on AUC: lower loss wins
        ([(0.7, 0.5), (float("nan"), 0.1)], 1),  # NaN AUC never counts as better
    ],
)
def test_auc_early_stopping_picks_best_auc_then_lowest_loss(scores, best_epoch):
    net = _HistoryNet()
    callback = AucEarlyStopping(patience=10, sink=lambda *a: None)
    callback.on_train_begin(net)
    for epoch, (auc, loss) in enumerate(scores, start=1):
        net.history.new_epoch()
        net.history.record("epoch", epoch)
        net.history.record("valid_auc", auc)
        net.history.record("valid_loss", loss)
        callback.on_epoch_end(net)
    assert callback.best_epoch_ == best_epoch


def test_auc_early_stopping_stops_after_patience():
    net = _HistoryNet()
    callback = AucEarlyStopping(patience=2, sink=lambda *a: None)
    callback.on_train_begin(net)
    with pytest.raises(StopTraining):
        for epoch in range(1, 10):
            net.history.new_epoch()
            net.history.record("epoch", epoch)
            net.history.record("valid_auc", 0.9)
            net.history.record("valid_loss", 0.5)
            callback.on_epoch_end(net)
    assert net.history[-1, "epoch"] == 3


def test_cosine_schedule_factor_warms_up_then_decays_to_the_floor():
    schedule = CosineSchedule(warmup=0.1, floor=0.01)
    assert schedule.factor(0.05) == pytest.approx(0.5)
    assert schedule.factor(0.1) == pytest.approx(1.0)
    assert schedule.factor(0.55) == pytest.approx(0.01 + 0.99 * 0.5)
    assert schedule.factor(1.0) == pytest.approx(0.01)
    assert schedule.factor(3.0) == pytest.approx(0.01)
    factors = [schedule.factor(p) for p in np.linspace(0.1, 1.0, 50)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


class _OptimizerNet:
    def __init__(self, time_limit=None, max_epochs=4, clock=None):
        self.time_limit = time_limit
        self.max_epochs = max_epochs
        self.verbose = 0
        self.time_budget_ = TimeBudget(time_limit, clock=clock or FakeClock())
        parameters = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
        self.optimizer_ = torch.optim.SGD(
            [{"params": [parameters[0]], "lr": 0.1}, {"params": [parameters[1]], "lr": 0.01}])

    def rates(self):
        return [group["lr"] for group in self.optimizer_.param_groups]


def test_cosine_schedule_follows_the_time_budget_per_group():
    clock = FakeClock(step=10.0)
    net = _OptimizerNet(time_limit=100, clock=clock)  # the budget starts at t=10
    clock.now -= 10.0  # no time passes before training
    schedule = CosineSchedule(warmup=0.0, floor=0.0)
    schedule.on_train_begin(net)  # t=10
    schedule.on_epoch_begin(net)
    schedule.on_batch_end(net, training=True)  # t=20: progress 0.1
    expected = 0.5 * (1 + np.cos(np.pi * 0.1))
    assert net.rates() == pytest.approx([0.1 * expected, 0.01 * expected])
    schedule.on_batch_end(net, training=False)  # validation batches do not step
    assert net.rates() == pytest.approx([0.1 * expected, 0.01 * expected])
    schedule.on_train_end(net)
    assert net.rates() == pytest.approx([0.1, 0.01])


def test_cosine_schedule_follows_epochs_without_a_time_limit():
    net = _OptimizerNet(time_limit=None, max_epochs=4)
    schedule = CosineSchedule(warmup=0.0, floor=0.0)
    schedule.on_train_begin(net)
    for _ in range(2):  # two epochs of five batches: halfway
        schedule.on_epoch_begin(net)
        for _ in range(5):
            schedule.on_batch_end(net, training=True)
        schedule.on_epoch_end(net)
    assert net.rates() == pytest.approx([0.05, 0.005])


def _batch(logits, targets):
    return {"batch": (None, torch.tensor(targets)), "y_pred": torch.tensor(logits)}


def _run_validated_epochs(net, callbacks, epochs):
    """Run ``callbacks`` through epochs of one validation batch each, then end training."""
    for callback in callbacks:
        callback.initialize()
        callback.on_train_begin(net)
    for epoch, (logits, targets, auc, loss) in enumerate(epochs, start=1):
        net.history.new_epoch()
        net.history.record("epoch", epoch)
        for callback in callbacks:
            callback.on_epoch_begin(net)
            callback.on_batch_end(net, training=False, **_batch(logits, targets))
        net.history.record("valid_auc", auc)
        net.history.record("valid_loss", loss)
        for callback in callbacks:
            callback.on_epoch_end(net)
    for callback in callbacks:
        callback.on_train_end(net)


def _net_with_head():
    net = _HistoryNet()
    net.module_ = torch.nn.Module()
    net.module_.head = CosineMatchHead(init_scale=10.0, init_bias=-5.0, link="linear")
    return net


def _platt(logits, targets):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4).fit(np.array(logits).reshape(-1, 1), targets)
    return model.coef_[0, 0], model.intercept_[0]


BEST_FIRST = [
    ([0.5, 2.0, -1.0, 3.0], [0.0, 1.0, 0.0, 1.0], 1.0, 0.3),  # best epoch
    ([9.0, 9.0, 9.0, 9.0], [0.0, 1.0, 0.0, 1.0], 0.5, 0.9),
    ([1.0, 0.0, 2.0, 4.0], [0.0, 1.0, 0.0, 1.0], 0.5, 0.8),
]


def _best_cosines():
    # The cosines behind the best epoch's logits, through the head 10 * cos - 5.
    return (np.array([0.5, 2.0, -1.0, 3.0]) + 5.0) / 10.0


def test_head_calibration_calibrates_the_head_on_the_restored_epoch():
    net = _net_with_head()
    calibration = HeadCalibration(sink=lambda *a: None)
    early_stopping = AucEarlyStopping(patience=10, sink=lambda *a: None)
    _run_validated_epochs(net, [early_stopping, calibration], BEST_FIRST)
    assert net.history[-1, "restored_epoch"] == 1
    # Platt scaling on Fisher's z of the cosines; the head takes the atanh link.
    a, b = _platt(np.arctanh(_best_cosines()), [0, 1, 0, 1])
    assert calibration.calibration_ == pytest.approx((a, b))
    assert net.module_.head.link == "atanh"
    cosine = torch.tensor([0.2, 0.7, 1.0])
    expected = a * torch.atanh(cosine.clamp(max=1 - 1e-6)) + b
    torch.testing.assert_close(net.module_.head(cosine), expected.float(), rtol=1e-5, atol=1e-4)
    assert torch.sigmoid(net.module_.head(torch.tensor(1.0))) > 0.99  # identical images


def test_linear_head_calibration_is_platt_scaling_of_the_logits():
    net = _net_with_head()
    calibration = HeadCalibration(link="linear", sink=lambda *a: None)
    logits, targets = [0.5, 2.0, 1.0, -1.0, 3.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    _run_validated_epochs(net, [AucEarlyStopping(patience=10, sink=lambda *a: None),
                                calibration], [(logits, targets, 0.8, 0.5)])
    cosine = torch.tensor([0.2, 0.7])
    a, b = _platt((np.array(logits) + 5.0) / 10.0, targets)  # on the cosines
    assert calibration.calibration_ == pytest.approx((a, b))
    assert net.module_.head.link == "linear"
    torch.testing.assert_close(net.module_.head(cosine), (a * cosine + b).float())
    # The same as Platt scaling of the logits, up to the fit's tiny regularisation.
    a, b = _platt(logits, targets)
    torch.testing.assert_close(net.module_.head(cosine), (a * (10.0 * cosine - 5.0) + b).float(),
                               rtol=0.02, atol=0.02)


@pytest.mark.parametrize("early_stopping", [
    AucEarlyStopping(patience=10, load_best=False, sink=lambda *a: None),  # nothing restored
    AucEarlyStopping(patience=10, calibrate=False, sink=lambda *a: None),
    None,  # no early stopping at all
])
def test_head_calibration_needs_a_restored_epoch_it_may_calibrate(early_stopping):
    net = _net_with_head()
    calibration = HeadCalibration(sink=lambda *a: None)
    callbacks = [calibration] if early_stopping is None else [early_stopping, calibration]
    _run_validated_epochs(net, callbacks, BEST_FIRST)
    assert calibration.calibration_ is None
    torch.testing.assert_close(net.module_.head(torch.tensor([0.5])), torch.tensor([0.0]))


def test_head_calibration_after_a_stop_by_patience_uses_the_best_epoch():
    net = _net_with_head()
    calibration = HeadCalibration(sink=lambda *a: None)
    early_stopping = AucEarlyStopping(patience=2, sink=lambda *a: None)
    with pytest.raises(StopTraining):
        _run_validated_epochs(net, [early_stopping, calibration], BEST_FIRST)
    for callback in (early_stopping, calibration):  # skorch still ends training
        callback.on_train_end(net)
    assert net.history[-1, "restored_epoch"] == 1
    assert calibration.calibration_ == pytest.approx(_platt(np.arctanh(_best_cosines()),
                                                            [0, 1, 0, 1]))


def test_early_stopping_alone_leaves_the_head():
    net = _net_with_head()
    early_stopping = AucEarlyStopping(patience=10, sink=lambda *a: None)
    _run_validated_epochs(net, [early_stopping], BEST_FIRST[:1])
    torch.testing.assert_close(net.module_.head(torch.tensor([0.5])), torch.tensor([0.0]))


def test_head_calibration_leaves_a_head_that_ranks_the_wrong_way():
    net = _net_with_head()
    calibration = HeadCalibration(sink=lambda *a: None)
    _run_validated_epochs(net, [calibration], [([2.0, -1.0], [0.0, 1.0], 0.0, 1.0)])
    assert calibration.calibration_ is None
    torch.testing.assert_close(net.module_.head(torch.tensor([0.5])), torch.tensor([0.0]))


def test_time_budget_spent_reading_images_still_ends_the_schedule_at_its_floor():
    # Reading the images takes 30 % of a 100 s budget before training starts;
    # each clock reading (one per callback and batch) then advances 0.5 s.
    clock = FakeClock(step=0.5)
    net = _OptimizerNet(time_limit=100, clock=clock)
    clock.now += 30.0
    schedule, time_limit = CosineSchedule(warmup=0.05, floor=0.01), TimeLimit()
    time_limit.initialize()
    for callback in (schedule, time_limit):
        callback.on_train_begin(net)
        callback.on_epoch_begin(net)
    factors = []
    with pytest.raises(StopTraining):
        while True:
            schedule.on_batch_end(net, training=True)
            factors.append(net.rates()[0] / 0.1)
            time_limit.on_batch_end(net, training=True)
    # The last step ran within one step of the end of the budget, at the floor;
    # counted from the start of training instead, it would have ended at 0.7
    # of the schedule, at a rate over 20 times the floor.
    assert factors[-1] == pytest.approx(schedule.factor(1.0), rel=0.2)
    assert factors[-1] < schedule.factor(0.7) / 20
    # ... and it still warms up when training starts (over 5 % of what is left).
    assert factors[0] < 0.3 and factors[0] < factors[1] < factors[2] < factors[3]
    assert max(factors) == pytest.approx(1.0, abs=0.01)


def test_time_limit_does_not_count_the_work_before_the_first_epoch_as_a_step():
    # Embedding every image for a frozen backbone happens after on_train_begin
    # and before the first epoch: it is spent, but it is not the length of a step.
    clock = FakeClock(step=1.0)
    net = _Net(time_limit=100, clock=clock)
    callback = TimeLimit()
    callback.initialize()
    callback.on_train_begin(net)
    clock.now += 60.0  # embedding
    callback.on_epoch_begin(net)
    done = 0
    with pytest.raises(StopTraining):
        for _ in range(100):
            callback.on_batch_end(net, training=True)
            done += 1
    assert done >= 35  # about 38 one-second steps fit in what is left


class _FakeAccelerator:
    """Two processes; the other one's time runs out at ``other_stops_at`` batches."""

    num_processes = 2

    def __init__(self, other_stops_at):
        self.other_stops_at = other_stops_at
        self.n_checks = 0
        self._trigger = False

    def set_trigger(self):
        self._trigger = True

    def check_trigger(self):
        self.n_checks += 1
        triggered, self._trigger = self._trigger or self.n_checks >= self.other_stops_at, False
        return triggered


def test_time_limit_stops_every_process_when_one_runs_out_of_time():
    net = _Net(time_limit=1000)
    net.accelerator = _FakeAccelerator(other_stops_at=3)
    callback = TimeLimit()
    # This process has time for ~1000 batches; the other process has not.
    assert _run_batches(callback, net, n_batches=100) == 2
    assert callback.stopped_


def test_time_limit_shares_its_own_stop_with_the_other_processes():
    net = _Net(time_limit=10)
    net.accelerator = _FakeAccelerator(other_stops_at=1000)
    callback = TimeLimit()
    assert _run_batches(callback, net, n_batches=100) + 1 == 8
    assert net.accelerator.n_checks == 8


def test_auc_early_stopping_restores_a_snapshot_of_a_wrapped_module():
    # Under distributed data parallel the snapshot's keys start with "module.";
    # by the end of training skorch's AccelerateMixin has unwrapped the module.
    net = _HistoryNet()
    net.module_ = torch.nn.Linear(2, 1)
    best = {f"module.{key}": value.clone() + 1.0 for key, value in
            net.module_.state_dict().items()}
    callback = AucEarlyStopping(sink=lambda *a: None)
    callback.on_train_begin(net)
    callback.best_model_weights_, callback.best_epoch_ = dict(best), 1
    callback.best_score_ = (1.0, 0.1)
    net.history.new_epoch()
    net.history.record("epoch", 2)
    callback.on_train_end(net)
    for key, value in net.module_.state_dict().items():
        torch.testing.assert_close(value, best[f"module.{key}"])


def test_head_calibration_refuses_an_unknown_link_before_training():
    with pytest.raises(ValueError, match="link must be 'atanh' or 'linear'"):
        HeadCalibration(link="cubic").on_train_begin(_net_with_head())


def test_head_calibration_linearizes_a_calibrated_head_when_training_starts():
    net = _net_with_head()
    net.module_.head.link = "atanh"
    before = net.module_.head(torch.tensor([0.3, 0.5]))
    HeadCalibration(sink=lambda *a: None).on_train_begin(net)
    head = net.module_.head
    assert head.link == "linear"
    c0 = math.tanh(5.0 / 10.0)  # 10 * atanh(c) - 5 = 0: the decision point is kept
    assert head(torch.tensor(c0)).item() == pytest.approx(0.0, abs=1e-5)
    assert not torch.allclose(head(torch.tensor([0.3, 0.5])), before)
