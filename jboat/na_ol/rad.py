"""RAD: reverse-mode differentiation through the recorded LL trajectory."""

from ..operation_registry import register_class
from .hyper_gradient import ReverseModeHyperGradient

__all__ = ["RAD"]


@register_class
class RAD(ReverseModeHyperGradient):
    """Hyper-gradient by back-propagation through the unrolled LL steps.

    ``dF/dx = ∂_x F + Σ_t (∂y_{t+1}/∂x)ᵀ μ_{t+1}``, ``μ_sel = ∂_y F``,
    ``μ_t = (∂y_{t+1}/∂y_t)ᵀ μ_{t+1}``, evaluated at ``y_sel`` (the latest
    iterate, or the step the plan selects). Exact for the unrolled problem.
    Memory: O(K·|y|) (the trajectory is kept); a truncated plan bounds it. With
    ``RAD.checkpoint_every: c`` (or ``auto``) only every ``c``-th state is kept and
    the backward pass recomputes the steps: the same hyper-gradient in
    O((K/c + c)·|y|) memory for about one extra forward pass per step.

    Ref: Franceschi, Donini, Frasconi, Pontil, "Forward and reverse gradient-based
    hyperparameter optimization", ICML 2017.
    """

    chain_stage = (1, 1)
    #: single-loop multiplier methods take a gradient step on their multiplier
    multiplier_rule = "gradient"

    def hypergradient(self, trajectory, ll_feed_dict, ul_feed_dict, wrt=None):
        return self.differentiate_through(trajectory, ul_feed_dict, wrt)
