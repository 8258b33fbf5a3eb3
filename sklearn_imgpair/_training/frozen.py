"""Frozen-backbone training: each image embedded once, the match head trained on the vectors."""

from collections.abc import Mapping

from skorch.utils import to_tensor

from sklearn_imgpair._images.datasets import PairDataset
from sklearn_imgpair._nn.siamese import embed_pair_dataset

__all__ = ["FrozenBackboneMixin"]


class FrozenBackboneMixin:
    """The ``freeze_backbone=True`` part of a pair classifier's skorch hooks.

    The backbone's weights get ``requires_grad=False`` and stay out of the
    optimizer (and its weight decay); the labelled training pairs are turned
    into pairs of embeddings, each distinct image embedded once
    (:func:`embed_pair_dataset`), and batches of embeddings (``"e1"``,
    ``"e2"``) go through the match head alone. Prediction is unchanged.
    """

    def initialize_optimizer(self, *args, **kwargs):
        """Freeze the backbone if asked, then build the optimizer for what still trains."""
        if self.freeze_backbone:
            # By parameter name, so that a module wrapped for distributed
            # training ("module.backbone....") is frozen alike.
            for name, param in self.module_.named_parameters():
                if "backbone" in name.split("."):
                    param.requires_grad_(False)
        return super().initialize_optimizer(*args, **kwargs)

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's, for the parameters that train (a frozen backbone's do not)."""
        trainable = [(name, param) for name, param in named_parameters if param.requires_grad]
        return super().get_params_for_optimizer(prefix, trainable)

    def get_dataset(self, X, y=None):
        """With a frozen backbone, labelled pairs of images become pairs of embeddings."""
        dataset = super().get_dataset(X, y)
        if self.freeze_backbone and isinstance(dataset, PairDataset) and dataset.y is not None:
            device = next(self.module_.parameters()).device  # the accelerator's, too
            return embed_pair_dataset(self.module_, dataset, batch_size=self.batch_size,
                                      device=device, precision=self.precision)
        return dataset

    def infer(self, x, **fit_params):
        """Batches of embeddings go through the match head alone."""
        if isinstance(x, Mapping) and "e1" in x:
            x = to_tensor(dict(x), device=self.device)
            return self.module_.similarity(x["e1"], x["e2"])
        return super().infer(x, **fit_params)
