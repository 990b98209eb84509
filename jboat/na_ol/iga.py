"""IGA: implicit gradient approximation along a single direction."""

from ..operation_registry import register_class
from ..utils.op_utils import grads_with_zeros, list_tensor_matmul
from ._lower_level import lower_level_positions, trainable_entries
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

    ``h`` is the plan's step objective at the evaluation point (its weight counted
    from the steps taken up to ``y_sel``). A heuristic surrogate of the implicit hyper-gradient
    (exact, e.g., when ``∇²_xy h (∇²_yy h)⁻¹ ∇_y F`` happens to equal ``λ ∇_x h``);
    there is no limit in which it becomes exact in general. Memory O(|y|): no
    trajectory is kept.

    Ref: Liu, Gao, Liu et al., "Learning with constraint learning: new perspective,
    solution strategy and various applications", IEEE TPAMI 2024.
    """

    chain_stage = (1, 3)

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, plan=None, **kwargs):
        super().__init__(ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                         solver_config, plan)
        self.positions = lower_level_positions(ll_model, self.ll_var)

    def hypergradient(self, trajectory, ll_feed_dict, ul_feed_dict, wrt=None):
        y_sel = trajectory.params()
        upper_loss = self.upper_loss_at(ul_feed_dict, trajectory, y_sel)
        lower_loss = self.step_objective_at(trajectory, ll_feed_dict, ul_feed_dict, y_sel)
        _, params = trainable_entries(y_sel, self.positions)
        grads = iga_hypergradient(params, self.ul_var, upper_loss, lower_loss,
                                  reduce=self.plan.reduce)
        return self.with_initial(upper_loss, trajectory, grads)
