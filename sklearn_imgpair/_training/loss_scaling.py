"""fp16 loss scaling for skorch nets, through skorch's public training-step hooks."""

from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator

from sklearn_imgpair._io.device import grad_scaler

__all__ = ["LossScalingMixin"]


class LossScalingMixin:
    """Scale the loss of fp16 training steps with a :class:`torch.amp.GradScaler`.

    fp16 gradients underflow without loss scaling; bf16 and fp32 need none.
    A net with ``precision="fp16"`` gets a scaler (``grad_scaler_``) when it
    is initialised; its training steps then back-propagate the scaled loss
    and step the optimizer through the scaler, which unscales the gradients
    and skips steps with inf or NaN. Nets in other precisions train exactly
    as skorch trains them.

    This is the library's only loss-scaling path. It overrides skorch's
    public ``train_step`` and ``train_step_single`` and assumes one optimizer,
    ``optimizer_``. Mixed precision under Hugging Face Accelerate is the
    accelerator's (``Accelerator(mixed_precision=...)``), so
    :class:`AcceleratedImagePairClassifier` refuses ``precision`` other than
    ``"fp32"`` and never reaches the scaler.
    """

    def initialize(self):
        """Create the loss scaler for ``precision="fp16"``, then initialise the net."""
        self.grad_scaler_ = grad_scaler(self.device) if self.precision == "fp16" else None
        return super().initialize()

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
        first, then the (unscaled) step is taken or skipped.
        """
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step(batch, **fit_params)
        self.optimizer_.zero_grad()
        step = self.train_step_single(batch, **fit_params)
        self.notify("on_grad_computed",
                    named_parameters=TeeGenerator(self.get_all_learnable_params()),
                    batch=batch, training=True)
        scaler.step(self.optimizer_)
        scaler.update()
        return step
