"""SkorchEstimatorMixin: a skorch net that keeps scikit-learn's estimator contract."""

from numbers import Integral, Real

from sklearn.utils._param_validation import Interval, Options, StrOptions
from torch.utils.data import Dataset

__all__ = ["SKORCH_PARAMETER_CONSTRAINTS", "SkorchEstimatorMixin"]

# Constraints of skorch's own parameters, in scikit-learn's vocabulary (skorch
# checks their names only).
SKORCH_PARAMETER_CONSTRAINTS = {
    "module": [callable],
    "criterion": [callable],
    "optimizer": [callable],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "iterator_train": [callable],
    "iterator_valid": [callable],
    "dataset": [callable, Dataset],
    "train_split": [callable, None],
    # Options rather than StrOptions, whose wrong strings scikit-learn's
    # check_param_validation tries: skorch's set_params builds the callbacks
    # from a new value at once and fails on them before fit could name them.
    "callbacks": [list, Options(str, {"disable"}), None],
    "predict_nonlinearity": [StrOptions({"auto"}), callable, None],
    "warm_start": ["boolean"],
    "verbose": ["verbose"],
    "compile": ["boolean"],
    "use_caching": [StrOptions({"auto"}), "boolean"],
    "torch_load_kwargs": [dict, None],
    "threshold": [Interval(Real, 0, 1, closed="both")],
    "iterator_train__shuffle": ["boolean"],
}


def _skorch_state(name):
    """A property for an attribute skorch's ``__init__`` sets, stored as ``_<name>``.

    Before skorch's ``__init__`` has set it, reading it raises AttributeError,
    as skorch's ``__setattr__`` expects of ``initialized_`` during ``__init__``.
    """
    key = "_" + name.rstrip("_")

    def get(self):
        try:
            return self.__dict__[key]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no {name} yet.") from None

    def set(self, value):
        self.__dict__[key] = value

    return property(get, set, doc=f"skorch's ``{name}``.")


class SkorchEstimatorMixin:
    """The parts of scikit-learn's estimator contract that skorch's ``NeuralNet`` misses.

    - Only public names are parameters: skorch lists every attribute not
      ending in ``_``, so its bookkeeping (``_params_to_validate``, Accelerate's
      ``_wrapped_with_accelerator``) reached ``clone`` and ``set_params``.
    - No fitted attribute is set in ``__init__``: skorch's ``history_``,
      ``initialized_`` and ``virtual_params_`` live in private storage.
    - Parameters set on the net win in ``get_params(deep=True)`` over the
      values of skorch's freshly built default callbacks (skorch reported
      ``callbacks__early_stopping__patience=5`` after the user set 2).
    - Parameters named in ``_module_parameters`` may hold torch modules:
      skorch's ``__setattr__`` takes a module set after ``__init__`` for a
      network component and refuses it.
    """

    _module_parameters = ()

    # skorch overrides scikit-learn's private _get_param_names to list every
    # attribute not ending in "_"; tests/test_classifier.py fails if skorch renames it
    # or stops listing parameters through it.
    def _get_param_names(self):
        return [name for name in super()._get_param_names() if not name.startswith("_")]

    history_ = _skorch_state("history_")
    initialized_ = _skorch_state("initialized_")
    virtual_params_ = _skorch_state("virtual_params_")

    def get_params(self, deep=True):
        """Get the parameters of this estimator, as scikit-learn's ``get_params``.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of contained objects (skorch's
            ``callbacks__<name>__<parameter>``).

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        params = super().get_params(deep=deep)
        if deep:
            params.update(super().get_params(deep=False))
        return params

    def __setattr__(self, name, value):
        if name in self._module_parameters:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
