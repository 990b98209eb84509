"""Shared machinery of the first-order (FO) operators.

FO operators run their own lower-level (LL) updates on the real LL variables and
return the upper-level (UL) gradient (:class:`jboat.plan.HyperGrads`);
:class:`jboat.Problem` writes it into the UL buffers and takes the UL step with the
user's optimizer (the single-loop protocol of :class:`jboat.base.SingleLoopSolver`).

Auxiliary copies of the LL variables (``y``, ``ŷ``, ``θ`` in the operators'
formulas) are *value snapshots*, not deep copies of the module: a list of fresh
leaf Vars aligned with ``ll_var`` (``v.detach()`` of each entry). The LL loss is
evaluated at such a list through a patched, side-effect-free view of the LL model
(:func:`jboat.higher_jit.functional_view`), called with ``params=`` the full parameter
list in which the ``ll_var`` entries are replaced by the snapshot. This avoids
``copy.deepcopy`` of Jittor modules (which copies data loaders, hooks and
buffers, and breaks on modules holding non-copyable state); a snapshot costs
``|y|`` memory once the real variables move on. It requires every ``ll_var`` entry to be a
parameter of ``lower_level_model``, which :meth:`FirstOrderOperator.check_combination`
enforces at build time.
"""

import inspect

import jittor as jt

from ..base import SingleLoopSolver
from ..errors import ConfigError, ConfigTypeError
from ..higher_jit import functional_view
from ..options import Option, resolve_section
from ..plan import HyperGrads
from ..utils.op_utils import (apply_custom_grads, clear_custom_grads, grads_with_zeros,
                              list_tensor_matmul, update_tensor_grads)

__all__ = ["FirstOrderOperator", "OptionalFloat", "FloatOrBool", "snapshot", "sgd_update",
           "squared_norm", "assign_values", "lower_optimizer_step", "state_vars",
           "call_projection"]


# -- options with a custom conversion ---------------------------------------------------------
class OptionalFloat(Option):
    """A float option that also accepts null (``None``: "use the documented fallback")."""

    def __init__(self, name, default=None, **kwargs):
        super().__init__(name, "float", default, **kwargs)

    def convert(self, value, where):
        if value is None:
            return None
        return super().convert(value, where)

    def range_text(self):
        text = super().range_text()
        return f"{text} or null" if text else "a number or null"


class FloatOrBool(Option):
    """A float option where ``true`` means 1.0 and ``false`` means 0.0."""

    def __init__(self, name, default, **kwargs):
        super().__init__(name, "float", default, **kwargs)

    def convert(self, value, where):
        if isinstance(value, bool):
            value = 1.0 if value else 0.0
        return super().convert(value, where)


# -- maths on lists of Vars -------------------------------------------------------------------
def snapshot(values):
    """Fresh leaf Vars holding the current values (later updates of ``values`` do not
    reach them; derivatives w.r.t. them do not reach ``values``)."""
    return [v.detach() for v in values]


def sgd_update(values, grads, lr):
    """Plain SGD ``v - lr * g`` (no momentum, no weight decay), as fresh leaves."""
    return [(v - g * lr).detach() for v, g in zip(values, grads)]


def squared_norm(values):
    """``Σ_i ||v_i||²`` (a scalar Var; differentiable)."""
    return list_tensor_matmul(values, values)


def assign_values(variables, values):
    """Overwrite the real variables with detached ``values`` (same Var objects)."""
    for var, value in zip(variables, values):
        var.update(value.detach())


def lower_optimizer_step(optimizer, ll_var, grads):
    """Apply ``optimizer`` with its own rule to ``ll_var`` along exactly ``grads``.

    The LL buffers are cleared first so that no stale gradient leaks into the step,
    then cleared again by :func:`apply_custom_grads`.
    """
    clear_custom_grads(ll_var)
    update_tensor_grads(ll_var, grads)
    apply_custom_grads(optimizer, ll_var)


def state_vars(values):
    """Vars from a saved state entry (Vars or numpy arrays), as fresh leaves."""
    return [jt.array(v) if not isinstance(v, jt.Var) else v.detach() for v in values]


# -- the base class ---------------------------------------------------------------------------
class FirstOrderOperator(SingleLoopSolver):
    """Base of the FO operators (not registered; each subclass sets ``role = "fo"``).

    Arguments as :class:`jboat.base.SingleLoopSolver`; ``solver_config[<section>]``
    holds this operator's validated options.

    Attributes:
        settings: the operator's validated option dict (defaults filled in).
        ll_opt: the LL optimizer (its own rule performs every LL update).
    """

    role = None
    #: whether the operator evaluates the LL loss at snapshots of ``ll_var``
    uses_snapshots = True

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, solver_config,
                 **kwargs):
        super().__init__(ll_objective, ul_objective, ll_model, ul_model, solver_config,
                         **kwargs)
        self.settings = self._settings(solver_config)
        self._view = None
        if self.uses_snapshots:
            self._check_lower_vars(ll_model, self.ll_var)
            self._view = functional_view(ll_model)
            index = {id(p): i for i, p in enumerate(ll_model.parameters())}
            self._slot_of_ll = [index[id(v)] for v in self.ll_var]
            self._model_params = list(ll_model.parameters())

    @classmethod
    def _settings(cls, solver_config):
        """The validated options (idempotent on a section ``Problem`` already validated,
        so an operator built directly from a raw config is checked the same way)."""
        return resolve_section(cls.options, solver_config.get(cls.config_section),
                               cls.config_section)

    @classmethod
    def check_combination(cls, config):
        model, ll_var = config.get("lower_level_model"), config.get("lower_level_var")
        if cls.uses_snapshots and model is not None and ll_var is not None:
            cls._check_lower_vars(model, ll_var)

    @classmethod
    def _check_lower_vars(cls, model, ll_var):
        params = {id(p) for p in model.parameters()}
        missing = [i for i, v in enumerate(ll_var) if id(v) not in params]
        if missing:
            raise ConfigError(
                f"{cls.__name__} evaluates the lower-level loss at copies of the lower-level "
                f"variables through lower_level_model, but lower_level_var entries {missing} "
                f"are not parameters of lower_level_model; make them parameters of the model "
                f"(e.g. lower_level_var = list(lower_level_model.parameters())).")

    # -- loss evaluation ------------------------------------------------------------------------
    def _params_with(self, values):
        full = list(self._model_params)
        for slot, value in zip(self._slot_of_ll, values):
            full[slot] = value
        return full

    def lower_loss(self, feed, values=None):
        """``f(x, y)`` at the real LL variables, or at ``values`` (aligned with ll_var)."""
        if values is None:
            return self.ll_objective(feed, self.ul_model, self.ll_model)
        return self.ll_objective(feed, self.ul_model, self._view,
                                 params=self._params_with(values))

    def upper_loss(self, feed, values=None):
        """``F(x, y)`` at the real LL variables, or at ``values``."""
        if values is None:
            return self.ul_objective(feed, self.ul_model, self.ll_model)
        return self.ul_objective(feed, self.ul_model, self._view,
                                 params=self._params_with(values))

    def descend_snapshot(self, feed, values, lr, steps):
        """``steps`` plain-SGD steps of a snapshot on ``f(x, ·)``; returns the new list."""
        for _ in range(steps):
            grads = grads_with_zeros(self.lower_loss(feed, values), values)
            values = sgd_update(values, grads, lr)
        return values

    def lower_step(self, grads):
        """One LL-optimizer step on the real LL variables along ``grads``."""
        lower_optimizer_step(self.ll_opt, self.ll_var, grads)

    @staticmethod
    def result(upper_loss, upper_grads):
        """The operator's :class:`HyperGrads`; a Var loss stays on the device
        (``Problem`` reads the iteration's scalars at once and stores floats)."""
        loss = upper_loss.detach() if isinstance(upper_loss, jt.Var) else float(upper_loss)
        return HyperGrads(loss, list(upper_grads))


def call_projection(projection, values):
    """Apply a user projection to a list of Vars.

    The callable receives the list positionally, or as ``params=`` when ``params``
    is a keyword-only parameter of its signature. It returns the projected list, or
    None after projecting the given Vars in place (``var.update(...)``).
    """
    if projection is None:
        return list(values)
    try:
        signature = inspect.signature(projection).parameters
    except (TypeError, ValueError):  # builtins without a signature
        signature = {}
    keyword = signature.get("params")
    if keyword is not None and keyword.kind == inspect.Parameter.KEYWORD_ONLY:
        out = projection(params=values)
    else:
        out = projection(values)
    if out is None:
        return list(values)
    out = list(out)
    if len(out) != len(values):
        raise ConfigTypeError(f"The projection returned {len(out)} tensors for {len(values)} "
                              f"lower-level variables; return one per variable (or None).")
    return [o if isinstance(o, jt.Var) else jt.array(o) for o in out]
