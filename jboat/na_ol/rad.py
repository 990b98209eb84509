"""RAD: reverse-mode differentiation through the recorded LL trajectory."""

from ..operation_registry import register_class
from .hyper_gradient import HyperGradient

__all__ = ["RAD"]


@register_class
class RAD(HyperGradient):
    """Hyper-gradient by back-propagation through the unrolled LL steps.

    ``dF/dx = ∂_x F + Σ_t (∂y_{t+1}/∂x)ᵀ μ_{t+1}``, ``μ_sel = ∂_y F``,
    ``μ_t = (∂y_{t+1}/∂y_t)ᵀ μ_{t+1}``, evaluated at ``y_sel`` (the latest
    iterate, or the step the plan selects). Exact for the unrolled problem.
    Memory: O(K·|y|) (the trajectory is kept); a truncated plan bounds it.

    Ref: Franceschi, Donini, Frasconi, Pontil, "Forward and reverse gradient-based
    hyperparameter optimization", ICML 2017.
    """

    tracks_trajectory = True
    chain_stage = (1, 1)
    #: single-loop multiplier methods take a gradient step on their multiplier
    multiplier_rule = "gradient"

    def hypergradient(self, trajectory, ll_feed_dict, ul_feed_dict, wrt=None):
        upper_loss = self.upper_loss_at(ul_feed_dict, trajectory, trajectory.params())
        return self.differentiate(upper_loss, trajectory, wrt)
