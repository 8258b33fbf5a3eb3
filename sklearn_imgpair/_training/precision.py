"""Mixed precision for skorch nets: the precision check, autocast, and fp16 loss scaling."""

from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator

from sklearn_imgpair._io.device import autocast, check_precision, grad_scaler, to_device

__all__ = ["MixedPrecisionMixin"]


class MixedPrecisionMixin:
    """The ``precision`` parameter of a skorch net, in one place.

    ``initialize`` checks that the device can compute in ``precision``
    (:func:`check_precision`); the module runs under :func:`torch.autocast`
    in that precision (inputs moved to the device first, without blocking
    from pinned memory on CUDA); and fp16 training scales the loss with a
    :class:`torch.amp.GradScaler` (``grad_scaler_``), since fp16 gradients
    underflow without it (bf16 and fp32 need none): the scaled loss is
    back-propagated, and the optimizer steps through the scaler, which
    unscales the gradients and skips steps with inf or NaN. Nets in other
    precisions train exactly as skorch trains them.

    This is the library's only mixed-precision path for training. It
    overrides skorch's public ``initialize``, ``infer``, ``train_step`` and
    ``train_step_single`` and assumes one optimizer, ``optimizer_``. Under
    Hugging Face Accelerate mixed precision is the accelerator's
    (``Accelerator(mixed_precision=...)``), so
    :class:`AcceleratedImagePairClassifier` refuses ``precision`` other than
    ``"fp32"`` and never reaches the scaler.
    """

    def initialize(self):
        """Check the precision and create the fp16 loss scaler, then initialise the net."""
        check_precision(self.precision, self.device)
        self.grad_scaler_ = grad_scaler(self.device) if self.precision == "fp16" else None
        return super().initialize()

    def infer(self, x, **fit_params):
        """Run the module with the backbone in ``precision``."""
        x = to_device(x, self.device)  # non-blocking from pinned memory on CUDA
        with autocast(self.precision, self.device):
            return super().infer(x, **fit_params)

    def train_step_single(self, batch, **fit_params):
        """Like skorch's, but the loss is scaled before the backward pass."""
        if getattr(self, "grad_scaler_", None) is None:
            return super().train_step_single(batch, **fit_params)
        self.module_.train()
        self.criterion_.train()
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self.grad_scaler_.scale(loss).backward()
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch, **fit_params):
        """Like skorch's, but the optimizer steps through the loss scaler.

        The scaler's ``step`` takes no closure, so the gradients are computed
        and unscaled first (``on_grad_computed`` callbacks see them unscaled),
        then the step is taken, or skipped where they hold inf or NaN.
        """
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step(batch, **fit_params)
        self.optimizer_.zero_grad()
        step = self.train_step_single(batch, **fit_params)
        scaler.unscale_(self.optimizer_)  # callbacks (e.g. gradient clipping) see true gradients
        self.notify("on_grad_computed",
                    named_parameters=TeeGenerator(self.get_all_learnable_params()),
                    batch=batch, training=True)
        scaler.step(self.optimizer_)
        scaler.update()
        return step
