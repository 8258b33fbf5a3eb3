"""AcceleratedImagePairClassifier: ImagePairClassifier trained through Hugging Face Accelerate."""

from sklearn.utils._param_validation import StrOptions
from skorch.hf import AccelerateMixin
from torch.utils.data import DataLoader

from sklearn_imgpair._classifier import ImagePairClassifier
from sklearn_imgpair._optional import import_optional

__all__ = ["AcceleratedImagePairClassifier"]


class AcceleratedImagePairClassifier(AccelerateMixin, ImagePairClassifier):
    """:class:`ImagePairClassifier` trained through Hugging Face Accelerate.

    skorch's :class:`skorch.hf.AccelerateMixin` on the pair classifier: an
    ``accelerate.Accelerator`` places the network, wraps it for distributed
    data parallel training when the script runs under ``accelerate launch``
    on several GPUs or nodes, and runs the forward pass in mixed precision
    (``Accelerator(mixed_precision="bf16")`` or ``"fp16"``). Everything else
    is the plain classifier's: the same parameters, data, losses, pair
    mining, callbacks and predictions. After ``fit`` the network is
    unwrapped (``module_`` is the bare :class:`SiameseNet`, in float32), so
    the fitted estimator predicts, pickles and hands its network on
    (``ImageEmbedder(classifier=clf)``) like a plain one.

    Parameters
    ----------
    model_name : str, default="swin_tiny_patch4_window7_224"
        Name of the timm backbone.

    accelerator : accelerate.Accelerator
        The accelerator; ``Accelerator()`` takes its settings (processes,
        mixed precision) from ``accelerate launch`` or ``accelerate config``.

    device : None, default=None
        Leave device placement to the accelerator.

    unwrap_after_train : bool, default=True
        Unwrap the network after training (skorch's parameter). Keep it True
        to predict in several processes, to pickle, or to hand the network on.

    callbacks__print_log__sink : "auto" or callable, default="auto"
        "auto" prints the training log (as ``verbose`` says) from the main
        process only.

    **kwargs
        Every parameter of :class:`ImagePairClassifier` and of skorch, but
        ``precision`` must be ``"auto"`` (the default: training in float32,
        prediction in bfloat16 where the device computes it natively) or
        ``"fp32"``: mixed precision in training is the accelerator's
        (``Accelerator(mixed_precision="bf16")``), and other values raise a
        ``ValueError`` in ``fit``.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two labels seen in ``fit``, sorted.

    module_ : SiameseNet
        The fitted network, unwrapped after training.

    image_size_ : int
        Side length the images are resized to.

    embedding_dim_ : int
        Length of the embedding vectors: the backbone's features, and the
        colour histogram's 512 with ``module__colour_share`` above 0.

    n_features_in_ : int
        Always 2: two image-path columns.

    history_ : skorch.History
        Per-epoch and per-batch training records of this process.

    See Also
    --------
    ImagePairClassifier : The classifier this class trains.
    skorch.hf.AccelerateMixin : skorch's Accelerate integration.

    Notes
    -----
    With N processes, each trains on its own 1/N of every epoch's shuffled
    pairs (``batch_size`` pairs per process and step, so N times as many per
    optimizer step); with ``pair_mining="graph"`` each draws its own
    identity batches. Validation, prediction and early stopping are not
    split: every process evaluates all validation pairs, so all processes
    take the same decisions without gathering, and the time limit stops
    all of them at the same step. Save or pickle the model from the main
    process only (``if clf.accelerator.is_main_process: ...``). :meth:`save`
    writes a plain :class:`ImagePairClassifier` file (without the
    accelerator), which ``ImagePairClassifier.load`` reads. An unpickled
    model predicts where its network was loaded (on the CPU when the
    training device is missing); to train it further, give it a new
    accelerator, ``clf.set_params(accelerator=Accelerator())``.

    With one process on the CPU and the same ``random_state``, training is
    the plain classifier's step for step: the two fits give the same model.

    Examples
    --------
    A script ``train.py``, run with ``accelerate launch --multi_gpu
    --mixed_precision bf16 train.py`` (or plain ``python train.py`` for
    one process)::

        from accelerate import Accelerator
        from sklearn_imgpair import AcceleratedImagePairClassifier

        clf = AcceleratedImagePairClassifier(accelerator=Accelerator(), lr=1e-4)
        clf.fit(X, y)
        if clf.accelerator.is_main_process:
            clf.save("model.safetensors")  # ImagePairClassifier.load reads it
    """

    _parameter_constraints = {
        **ImagePairClassifier._parameter_constraints,
        "accelerator": "no_validation",  # accelerate is optional: initialize checks it
        "unwrap_after_train": ["boolean"],
        "callbacks__print_log__sink": [StrOptions({"auto"}), callable],
    }

    # Left out of the file by ImagePairClassifier._to_file: it holds a plain classifier.
    _not_saved = ("accelerator", "unwrap_after_train", "callbacks__print_log__sink")

    @classmethod
    def load(cls, path, *, device=None):
        """Not available: :meth:`save` writes a plain classifier's file.

        Load it with :meth:`ImagePairClassifier.load`; it predicts anywhere,
        with or without Accelerate.

        Parameters
        ----------
        path : str or path-like
            The model file.
        device : str, default=None
            Ignored.

        Raises
        ------
        TypeError
            Always.
        """
        raise TypeError(f"{cls.__name__}.save writes a plain ImagePairClassifier file; load "
                        "it with ImagePairClassifier.load(path).")

    def __init__(self, model_name="swin_tiny_patch4_window7_224", *, accelerator,
                 device=None, unwrap_after_train=True,
                 callbacks__print_log__sink="auto", **kwargs):
        super().__init__(model_name, accelerator=accelerator, device=device,
                         unwrap_after_train=unwrap_after_train,
                         callbacks__print_log__sink=callbacks__print_log__sink, **kwargs)

    def _check_accelerator(self):
        accelerate = import_optional("accelerate", type(self).__name__)
        if not isinstance(self.accelerator, accelerate.Accelerator):
            raise TypeError(
                f"accelerator must be an accelerate.Accelerator; got "
                f"{type(self.accelerator).__name__}."
            )

    def initialize(self):
        """Validate the parameters and the accelerator, then build and prepare everything.

        Mixed precision is the accelerator's (``Accelerator(mixed_precision=...)``),
        so ``precision`` must be ``"auto"`` or ``"fp32"``, which both train in
        float32: the plain classifier's bf16 or fp16 autocast and fp16 loss
        scaling would run beside the accelerator's.
        """
        self._check_parameters_unless_fitting()
        self._check_accelerator()
        if self.precision not in ("auto", "fp32"):
            raise ValueError(
                f"precision={self.precision!r} is not for {type(self).__name__}: mixed "
                "precision is the accelerator's. Keep precision='auto' or 'fp32' and pass "
                "accelerator=Accelerator(mixed_precision='bf16') (or 'fp16'), or use "
                "`accelerate launch --mixed_precision bf16`.")
        # skorch's AccelerateMixin.initialize builds everything itself, without the
        # net's initialize: no loss scaler, by design.
        self.grad_scaler_ = None
        return super().initialize()

    # skorch's AccelerateMixin._initialize_callbacks (private, and the only place to
    # step in) rewrites the parameter callbacks__print_log__sink from "auto" to
    # accelerator.print (a parameter changed by fit) and compares any value to "auto"
    # (an error for values that do not compare to a string). It is handed print for
    # the time of the call, and "auto" is resolved on the PrintLog callback instead;
    # tests/scale/test_accelerate.py fails if skorch renames the hook or calls it no more.
    def _initialize_callbacks(self):
        sink = self.callbacks__print_log__sink
        self.callbacks__print_log__sink = print
        try:
            super()._initialize_callbacks()
        finally:
            self.callbacks__print_log__sink = sink
        if isinstance(sink, str) and sink == "auto":
            # skorch's PrintLog ignores verbose=0 for any sink but print itself.
            sink = print if self.accelerator.is_main_process else _print_nothing
        for name, callback in getattr(self, "callbacks_", []):
            if name == "print_log":
                callback.sink = sink
        return self

    def get_iterator(self, dataset, training=False):
        """Batches on the accelerator's device; training batches split between processes.

        The training loader is prepared by the accelerator (this process's
        share of the shuffled pairs), then joined by identity batches when
        ``pair_mining="graph"``. The validation loader covers all of
        ``dataset`` in every process. (skorch's ``AccelerateMixin.get_iterator``
        would prepare the identity batches instead of the pairs, and split
        the validation pairs between processes.)
        """
        loader = self._data_loader(dataset, training=training)
        if training:
            return self._with_identity_batches(
                dataset, self.accelerator.prepare(loader), device=self.accelerator.device,
                seed_offset=self.accelerator.process_index)
        if not isinstance(loader, DataLoader):
            return loader
        # Where the network is: the accelerator's device during and after
        # training, the CPU after unpickling on a machine without that device.
        device = next(self.module_.parameters()).device
        data_loader = import_optional("accelerate.data_loader", type(self).__name__)
        return data_loader.prepare_data_loader(loader, device=device, num_processes=1,
                                               process_index=0, put_on_device=True)

    def evaluation_step(self, batch, training=False):
        """Run the network on a batch; no gathering, as no process evaluates a share.

        (skorch's ``AccelerateMixin.evaluation_step`` gathers the processes'
        shares.)
        """
        return self._evaluation_step_here(batch, training=training)

    def __setstate__(self, state):
        device = state["device"]
        if device is None:
            state["device"] = "cpu"  # where skorch loads the tensors; None makes it warn
        super().__setstate__(state)
        self.device = device  # predictions follow the network; a refit, the accelerator


def _print_nothing(*args, **kwargs):
    """The training log's sink on processes other than the main one."""
