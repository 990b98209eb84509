"""Base class of the hyper-gradient (numerical-approximation) operators."""

from ..base import OperatorSpec
from ..distributed import data_parallel_reduction
from ..errors import ConfigError
from ..higher_jit.utils import grads_with_zeros
from ..operation_registry import register_class
from ..utils.op_utils import update_tensor_grads

__all__ = ["HyperGradient"]


@register_class
class HyperGradient(OperatorSpec):
    """Base of NA operators.

    Args:
        ll_objective, ul_objective: the LL/UL loss callables.
        ul_model, ll_model: the UL/LL ``jittor.Module``.
        ll_var, ul_var: lists of Vars; hyper-gradients go to ``ul_var``'s buffers.
        solver_config: the normalised solver config.

    Class attributes:
        na_stage: ``"pre"`` (PTT, FOA, RGT: prepare and pass on) or ``"terminal"``.
        accepts_prefix: terminal operators that may run right before this one
            (CG and NS accept IAD).

    Attributes:
        reduce_full_data: None, or (``data_parallel`` under MPI) the callable that
            turns per-rank vectors into their mean over ranks; operators apply it
            where a non-linear step needs the full-data value (see
            :func:`jboat.distributed.data_parallel_reduction`).
    """

    na_stage = "terminal"
    accepts_prefix = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "role" not in cls.__dict__:
            cls.role = "na"

    def __init__(self, ll_objective, ul_objective, ul_model, ll_model, ll_var, ul_var,
                 solver_config, **kwargs):
        self.ll_objective = ll_objective
        self.ul_objective = ul_objective
        self.ul_model = ul_model
        self.ll_model = ll_model
        self.ll_var = list(ll_var)
        self.ul_var = list(ul_var)
        self.solver_config = solver_config
        self.solver_configs = solver_config
        self.dynamic_initialization = "DI" in (solver_config.get("gm_op") or ())
        self.reduce_full_data = data_parallel_reduction(solver_config)

    def compute_gradients(self, **kwargs):
        raise NotImplementedError("Subclasses implement compute_gradients().")

    # -- shared steps -------------------------------------------------------------------
    @staticmethod
    def selected_params(auxiliary_model, kwargs):
        """``y_sel``: the weights a pre-operator chose, else the latest."""
        chosen = kwargs.get("lower_model_params")
        return list(chosen) if chosen is not None else auxiliary_model.parameters()

    def upper_loss_at(self, ul_feed_dict, auxiliary_model, params):
        return self.ul_objective(ul_feed_dict, self.ul_model, auxiliary_model, params=params)

    def _initial_weight_targets(self, auxiliary_model):
        """Pairs (ll_var entry, its fast weight at time 0) for the DI hook."""
        initial = auxiliary_model.parameters(time=0)
        index_of = {id(p): i for i, p in enumerate(self.ll_model.parameters())}
        pairs = []
        for var in self.ll_var:
            i = index_of.get(id(var))
            if i is not None and not initial[i].is_stop_grad():
                pairs.append((var, initial[i]))
        return pairs

    def add_hypergradient(self, upper_loss, auxiliary_model, extra=None):
        """Add ``d upper_loss / d ul_var`` (+ ``extra``) to the UL buffers and, under
        DI, ``d upper_loss / d y_0`` to the LL buffers (operators.md §0.3).

        Both derivatives are taken in one backward pass.
        """
        targets = list(self.ul_var)
        di_pairs = self._initial_weight_targets(auxiliary_model) if self.dynamic_initialization else []
        grads = grads_with_zeros(upper_loss, targets + [y0 for _, y0 in di_pairs])
        ul_grads = grads[:len(targets)]
        if extra is not None:
            ul_grads = [g + e for g, e in zip(ul_grads, extra)]
        update_tensor_grads(self.ul_var, ul_grads)
        if di_pairs:
            update_tensor_grads([var for var, _ in di_pairs], grads[len(targets):])

    def add_initial_weight_gradient(self, upper_loss, auxiliary_model):
        """DI hook alone (for operators that compute the UL gradient otherwise)."""
        if not self.dynamic_initialization:
            return
        pairs = self._initial_weight_targets(auxiliary_model)
        grads = grads_with_zeros(upper_loss, [y0 for _, y0 in pairs])
        update_tensor_grads([var for var, _ in pairs], grads)

    @staticmethod
    def finished(upper_loss):
        """The terminal record. ``upper_loss`` stays a (detached) Var: ``Problem``
        reads every scalar of an iteration at once and stores floats."""
        return {"upper_loss": upper_loss.detach(), "hyper_gradient_finished": True}

    @staticmethod
    def require_terminal(name, next_operation):
        if next_operation is not None:
            raise ConfigError(f"{name} computes the final hyper-gradient and cannot be "
                              f"followed by {next_operation} in na_op.")
