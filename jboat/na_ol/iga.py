"""IGA: implicit gradient approximation along a single direction."""

from ..errors import ConfigError
from ..higher_jit.utils import grads_with_zeros
from ..operation_registry import register_class
from ..utils.objectives import StepObjective
from ..utils.op_utils import list_tensor_matmul, update_tensor_grads
from ._lower_level import evaluation_step, lower_level_positions, trainable_entries
from .hyper_gradient import HyperGradient

__all__ = ["IGA", "iga_hypergradient"]

#: keeps the division defined when ∇_y h vanishes (λ is then 0)
_TINY = 1e-30


def iga_hypergradient(params, hparams, upper_loss, lower_loss, reduce=None):
    """``∇_x F - λ ∇_x h`` with ``λ = sg(<∇_y F, ∇_y h> / ‖∇_y h‖²)``.

    ``λ`` is the least-squares multiplier of ``∇_y F ≈ λ ∇_y h``: the implicit
    correction ``∇²_xy h (∇²_yy h)⁻¹ ∇_y F`` is replaced by a surrogate along the
    single direction ``∇_y h``. Gradients w.r.t. ``hparams`` go through whatever
    graph exists (with a recorded trajectory, through it).

    Args:
        params: list of Var, LL variables at ``y_sel``.
        hparams: list of Var (``ul_var``).
        upper_loss, lower_loss: scalar Vars ``F(x, y_sel)`` and ``h(x, y_sel)``.
        reduce: None, or a callable returning the mean over data-parallel ranks of
            a list of Vars: applied to ``∇_y F`` and ``∇_y h`` (one all-reduce of
            ``2|y|`` numbers) so that ``λ`` is the full-data one on every rank.

    Returns:
        list of Var aligned with ``hparams``. Cost: two backward passes, no HVP.
    """
    params, hparams = list(params), list(hparams)
    upper = grads_with_zeros(upper_loss, params + hparams)
    lower = grads_with_zeros(lower_loss, params + hparams)
    a, upper_x = upper[:len(params)], upper[len(params):]
    b, lower_x = lower[:len(params)], lower[len(params):]
    if reduce is not None:
        both = reduce([g.detach() for g in a + b])
        a, b = both[:len(a)], both[len(a):]
    lam = (list_tensor_matmul(a, b) / (list_tensor_matmul(b, b) + _TINY)).detach()
    return [fx - hx * lam for fx, hx in zip(upper_x, lower_x)]


@register_class
class IGA(HyperGradient):
    """Terminal: ``∇_x F - λ ∇_x h`` at ``y_sel``, ``λ = <∇_yF, ∇_yh> / ‖∇_yh‖²``.

    ``h`` is the LL step objective at the evaluation point (GDA weight ``α_{k*}``,
    operators.md §0.2). A heuristic surrogate of the implicit hyper-gradient
    (exact, e.g., when ``∇²_xy h (∇²_yy h)⁻¹ ∇_y F`` happens to equal ``λ ∇_x h``);
    there is no limit in which it becomes exact in general. Memory O(|y|): no
    trajectory is kept.

    Ref: Liu, Gao, Liu et al., "Learning with constraint learning: new perspective,
    solution strategy and various applications", IEEE TPAMI 2024.
    """

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, ul_model, ll_model, ll_var, ul_var,
                         solver_config)
        self.lower_iters = solver_config["lower_iters"]
        self.objective = StepObjective.from_config(ll_objective, solver_config)
        self.positions = lower_level_positions(ll_model, self.ll_var)

    def compute_gradients(self, ll_feed_dict, ul_feed_dict, auxiliary_model, max_loss_iter=0,
                          hyper_gradient_finished=False, next_operation=None, **kwargs):
        if hyper_gradient_finished:
            raise ConfigError("IGA found the hyper-gradient already computed; it must be "
                              "the last operator of na_op.")
        self.require_terminal("IGA", next_operation)
        y_sel = self.selected_params(auxiliary_model, kwargs)
        step = evaluation_step(max_loss_iter, kwargs, self.lower_iters)
        upper_loss = self.upper_loss_at(ul_feed_dict, auxiliary_model, y_sel)
        lower_loss = self.objective(step, ll_feed_dict, ul_feed_dict, self.ul_model,
                                    auxiliary_model, params=y_sel)
        _, params = trainable_entries(y_sel, self.positions)
        grads = iga_hypergradient(params, self.ul_var, upper_loss, lower_loss,
                                  reduce=self.reduce_full_data)
        update_tensor_grads(self.ul_var, grads)
        self.add_initial_weight_gradient(upper_loss, auxiliary_model)
        return self.finished(upper_loss)
