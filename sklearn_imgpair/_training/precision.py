"""The precision of a skorch net's training: its check, and fp16 loss scaling.

fp16 gradients underflow without loss scaling (bf16 and fp32 need none): the
scaled loss is back-propagated, and the optimizer steps through a
:class:`torch.amp.GradScaler`, which unscales the gradients and skips steps
with inf or NaN. The net makes its scaler (``grad_scaler_``) with
:func:`training_loss_scaler` and calls the two step functions from its
``train_step`` and ``train_step_single`` when it holds one; they assume one
optimizer, ``optimizer_``. Autocast itself is :func:`autocast`, in
``_nn.device``. Under Hugging Face Accelerate mixed precision is the
accelerator's, so :class:`AcceleratedImagePairClassifier` never holds a scaler.
"""

from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator

from sklearn_imgpair._nn.device import check_precision, grad_scaler

__all__ = ["scaled_train_step", "scaled_train_step_single", "training_loss_scaler"]


def training_loss_scaler(precision, device):
    """Check that ``device`` can train in ``precision``; return the fp16 loss scaler, else None.

    Raises
    ------
    ValueError
        Where the device cannot compute in ``precision`` (:func:`check_precision`).
    """
    check_precision(precision, device)
    return grad_scaler(device) if precision == "fp16" else None


def scaled_train_step_single(net, batch, scaler, **fit_params):
    """skorch's ``train_step_single``, with the loss scaled before the backward pass.

    Returns
    -------
    step : dict
        ``loss`` (unscaled) and ``y_pred``, as skorch's.
    """
    net.module_.train()
    net.criterion_.train()
    Xi, yi = unpack_data(batch)
    y_pred = net.infer(Xi, **fit_params)
    loss = net.get_loss(y_pred, yi, X=Xi, training=True)
    scaler.scale(loss).backward()
    return {"loss": loss, "y_pred": y_pred}


def scaled_train_step(net, batch, scaler, **fit_params):
    """skorch's ``train_step``, with the optimizer stepping through the loss scaler.

    The scaler's ``step`` takes no closure, so the gradients are computed
    and unscaled first (``on_grad_computed`` callbacks, e.g. gradient
    clipping, see them unscaled), then the step is taken, or skipped where
    they hold inf or NaN.

    Returns
    -------
    step : dict
        What ``net.train_step_single`` returned.
    """
    net.optimizer_.zero_grad()
    step = net.train_step_single(batch, **fit_params)
    scaler.unscale_(net.optimizer_)
    net.notify("on_grad_computed", named_parameters=TeeGenerator(net.get_all_learnable_params()),
               batch=batch, training=True)
    scaler.step(net.optimizer_)
    scaler.update()
    return step
