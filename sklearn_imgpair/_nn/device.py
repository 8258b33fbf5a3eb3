"""Where and how a network runs: device, precision, decode workers and seeds, for every caller."""

import contextlib
import math
import os
import queue
import threading
import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

__all__ = [
    "PRECISIONS",
    "RUNTIME_PARAMETER_CONSTRAINTS",
    "autocast",
    "available_cores",
    "check_device",
    "check_precision",
    "cpu_has_fast_bf16",
    "default_num_workers",
    "device_type",
    "fitted_precision",
    "grad_scaler",
    "loadable_device",
    "loadable_precision",
    "loader_kwargs",
    "prefetch",
    "resolve_device",
    "resolve_precision",
    "seeded",
    "to_device",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# The parameters that mean the same in every estimator: where the network runs,
# in which arithmetic, with how many decode workers, and how it is seeded.
# (``sklearn.utils._param_validation`` is private, but it is the vocabulary the
# style guide prescribes and scikit-learn's own estimators use; tests/test_common.py
# runs scikit-learn's parameter-validation check on it.)
RUNTIME_PARAMETER_CONSTRAINTS = {
    # "auto" and device names are strings, checked by check_device in fit.
    "device": [str, torch.device, None],
    "precision": [StrOptions(set(PRECISIONS))],
    "num_workers": [Interval(Integral, 0, None, closed="left"), None],
    "random_state": ["random_state"],
}


def _mps_is_available():
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(device):
    """Return the device ``device`` names: ``"auto"`` is CUDA, else MPS, else the CPU.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"``, a device name such as ``"cpu"`` or ``"cuda:1"``, a
        :class:`torch.device`, or None (left to the caller, e.g. Accelerate).

    Returns
    -------
    device : str, torch.device or None
        ``device`` itself unless it is ``"auto"``, which is ``"cuda"`` when
        :func:`torch.cuda.is_available`, else ``"mps"`` (Apple GPUs) when
        ``torch.backends.mps.is_available()``, else ``"cpu"``.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_is_available() else "cpu"
    return device


def check_device(device):
    """Check that ``device`` names a torch device (or is ``"auto"`` or None).

    Raises
    ------
    ValueError
        Naming the value and what torch said of it.
    """
    device = resolve_device(device)
    if device is None or isinstance(device, torch.device):
        return
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device={device!r} is not a torch device ({exc}); use 'cpu', "
                         "'cuda', 'cuda:N', 'mps', 'auto' or a torch.device.") from None


def device_type(device):
    """Return ``"cpu"``, ``"cuda"``, ... for a device name or object (None: ``"cpu"``)."""
    device = resolve_device(device)
    return "cpu" if device is None else torch.device(device).type


def loadable_device(saved, device):
    """The device a loaded estimator runs on: ``device``, else ``saved`` if available here."""
    if device is not None:
        return device
    missing = ((str(saved).startswith("cuda") and not torch.cuda.is_available())
               or (str(saved).startswith("mps") and not _mps_is_available()))
    if missing:
        warnings.warn(f"The model was saved on device {saved!r}, which is not available "
                      "here; it is loaded on 'cpu'.", UserWarning, stacklevel=3)
        return "cpu"
    return saved


def available_cores():
    """Return the number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_num_workers(device):
    """Decode workers that keep ``device`` fed without starving it of cores.

    On CUDA the model barely needs the CPU, so every core but one decodes
    (at most 16). On CPU the model's own threads use every core, and decoding
    a photo costs a few percent of a Swin forward pass, so one worker per 8
    cores: none on machines with fewer than 8, where a worker would only
    fight the model for its cores (measured in ``benchmarks/bench_inference.py``).
    """
    cores = available_cores()
    if device_type(device) == "cuda":
        return max(1, min(cores - 1, 16))
    return cores // 8


def loader_kwargs(device, num_workers, n_items, batch_size):
    """DataLoader keyword arguments for reading ``n_items`` images on ``device``.

    Parameters
    ----------
    device : str or torch.device
        Where the batches go; CUDA gets pinned memory.
    num_workers : int or None
        Worker processes; None sizes them to the machine
        (:func:`default_num_workers`), and never starts more than there are
        batches after the first, since starting a worker costs more than
        decoding one small batch.
    n_items, batch_size : int
        Size of the data set and of a batch.

    Returns
    -------
    kwargs : dict
        ``num_workers`` and ``pin_memory``.
    """
    if num_workers is None:
        n_batches = math.ceil(n_items / batch_size)
        num_workers = min(default_num_workers(device), max(n_batches - 1, 0))
    return {"num_workers": num_workers, "pin_memory": device_type(device) == "cuda"}


def prefetch(batches):
    """Iterate over ``batches`` with the next one read in a background thread.

    With no loader workers, a :class:`~torch.utils.data.DataLoader` decodes
    each batch in the thread that asks for it, so the network waits for the
    decoding. Asking for the next batch from a second thread while the
    network runs overlaps the two: PIL's decoding and resizing release the
    GIL. Errors of the reading thread are raised here, in order.

    Parameters
    ----------
    batches : iterable
        Typically a DataLoader with ``num_workers=0``.

    Yields
    ------
    batch
        The items of ``batches``, in order.
    """
    slots = queue.Queue(maxsize=1)  # one batch ahead: memory of one extra batch
    stop = threading.Event()
    done = object()

    def read():
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        slots.put((batch, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put((None, exc))

    reader = threading.Thread(target=read, name="sklearn-imgpair-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            batch, error = slots.get()
            if error is not None:
                raise error
            if batch is done:
                return
            yield batch
    finally:
        stop.set()
        # (A generator collected on the reader thread itself cannot join it; it stops.)
        while reader.is_alive() and threading.current_thread() is not reader:
            try:
                slots.get_nowait()
            except queue.Empty:
                pass
            reader.join(timeout=0.05)


def to_device(x, device):
    """Move a tensor, or a mapping of tensors, to ``device`` (non-blocking on CUDA)."""
    if isinstance(x, dict):
        return {key: to_device(value, device) for key, value in x.items()}
    if isinstance(x, torch.Tensor) and device is not None:
        return x.to(device, non_blocking=device_type(device) == "cuda")
    return x


def cpu_has_fast_bf16():
    """Return True if this CPU has bfloat16 instructions (AVX512-BF16 or AMX)."""
    # Private names of torch.cpu (torch has no public query of these CPU flags); a torch
    # without them counts as no bf16, and tests/nn/test_device.py checks they still exist.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _cuda_has_bf16():
    """Whether the current CUDA GPU computes bfloat16 natively (compute capability >= 8.0)."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.5 counts emulated bf16 (pre-Ampere GPUs) as supported
        return torch.cuda.get_device_capability()[0] >= 8


def resolve_precision(precision, device, *, training=False):
    """Return the precision that runs: ``"auto"`` resolved for ``device``.

    ``"auto"`` runs inference in bfloat16 where the hardware computes it
    natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU of compute capability
    8.0 or more), else in float32, and trains in float32 everywhere. A
    default for training must give 1.5 times the steps without losing ROC AUC
    or calibration: on a CPU with AVX512-BF16, bf16 training ran 1.77 times
    the steps of fp32 in the same time but lost 0.006 ROC AUC on unseen
    objects and raised the calibration error on look-alikes from 0.067 to
    0.089 (the screen of the benchmarks page), so ``precision="bf16"`` stays
    the explicit choice to fit faster. On CPUs without bfloat16 instructions
    bf16 is emulated: about 9 times slower than fp32 (a swin_tiny forward at
    224 px, 1.0 against 8.7 images/s).

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16", "fp16"}
        Anything but ``"auto"`` is returned as it is.
    device : str, torch.device or None
        Where the network runs; ``"auto"`` is resolved first. Devices other
        than CPU and CUDA (MPS) run ``"auto"`` in float32.
    training : bool, default=False
        Whether the precision is for training, where ``"auto"`` is ``"fp32"``.

    Returns
    -------
    precision : {"fp32", "bf16", "fp16"}
    """
    if precision != "auto":
        return precision
    if training:
        return "fp32"
    kind = device_type(device)
    native = (cpu_has_fast_bf16() if kind == "cpu" else
              kind == "cuda" and _cuda_has_bf16())
    return "bf16" if native else "fp32"


def fitted_precision(estimator):
    """The precision a fitted estimator's network predicts in here (its ``precision_``).

    ``estimator.precision`` resolved (:func:`resolve_precision`) for the
    device its ``module_`` is on, read at each call, so that a precision set
    after ``fit`` counts.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        Before ``fit``: the estimator has no network yet.
    """
    module = vars(estimator).get("module_")
    if module is None:
        raise NotFittedError(f"This {type(estimator).__name__} instance is not fitted yet: "
                             "precision_ is the precision of its network, set by fit.")
    return resolve_precision(estimator.precision, next(module.parameters()).device)


def check_precision(precision, device):
    """Check that ``device`` can compute in ``precision``.

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16", "fp16"}
        ``"auto"`` always passes: it only chooses what ``device`` can do.
    device : str, torch.device or None
        ``"auto"`` is resolved first.

    Raises
    ------
    ValueError
        For ``"fp16"`` on a CPU, ``"bf16"`` on a GPU without bfloat16, or
        reduced precision on a device other than CPU and CUDA.

    Warns
    -----
    UserWarning
        For ``"bf16"`` on a CPU without bfloat16 instructions, where it is
        emulated and usually slower than ``"fp32"``.
    """
    if precision in ("auto", "fp32"):
        return
    device = resolve_device(device)
    kind = device_type(device)
    if kind == "cuda":
        if precision == "bf16" and not _cuda_has_bf16():
            raise ValueError(
                f"precision='bf16' needs a GPU with bfloat16 support; "
                f"{torch.cuda.get_device_name(device)} has none. Use precision='fp16'.")
    elif kind == "cpu":
        if precision == "fp16":
            raise ValueError("precision='fp16' needs a CUDA device; on CPU use "
                             "precision='bf16' (or 'fp32').")
        if not cpu_has_fast_bf16():
            warnings.warn(
                "precision='bf16': this CPU has no bfloat16 instructions (AVX512-BF16 or "
                "AMX), so bfloat16 is emulated and usually slower than precision='fp32'.",
                UserWarning, stacklevel=3)
    else:
        raise ValueError(f"precision={precision!r} works on 'cpu' and 'cuda' devices; got "
                         f"device {str(device)!r}. Use precision='fp32'.")


def loadable_precision(precision, device):
    """Return ``precision``, or ``"fp32"`` with a warning where ``device`` cannot run it.

    For models loaded on another machine than the one they were saved on;
    ``"auto"`` stays ``"auto"``, resolved on the machine that loads it.
    """
    try:
        check_precision(precision, device)
    except ValueError as exc:
        warnings.warn(f"{exc} Loading the model with precision='fp32'.", UserWarning,
                      stacklevel=3)
        return "fp32"
    return precision


def grad_scaler(device):
    """A loss scaler for fp16 training on ``device``."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device_type(device))
    return torch.cuda.amp.GradScaler()  # torch < 2.3


def autocast(precision, device, *, training=False):
    """Return the autocast context of ``precision`` on ``device`` (none for fp32).

    ``"auto"`` is resolved by :func:`resolve_precision`, for inference unless
    ``training``.
    """
    precision = resolve_precision(precision, device, training=training)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type(device), dtype=_DTYPES[precision])


@contextlib.contextmanager
def seeded(random_state):
    """Seed torch's (CPU and every CUDA device) and numpy's global generators in the block.

    The callers' generator states are restored afterwards, so an estimator's
    ``random_state`` leaves no trace on other code. None leaves the
    generators alone.
    """
    if random_state is None:
        yield
        return
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
