"""RAD: reverse-mode differentiation through the recorded LL trajectory."""

from ..operation_registry import register_class
from .hyper_gradient import HyperGradient

__all__ = ["RAD"]


@register_class
class RAD(HyperGradient):
    """Hyper-gradient by back-propagation through the unrolled LL steps.

    ``dF/dx = ∂_x F + Σ_t (∂y_{t+1}/∂x)ᵀ μ_{t+1}``, ``μ_sel = ∂_y F``,
    ``μ_t = (∂y_{t+1}/∂y_t)ᵀ μ_{t+1}``, evaluated at ``y_sel`` (the latest
    iterate, or the one a pre-operator selected). Exact for the unrolled problem.
    Memory: O(K·|y|) (the trajectory is kept); bound it with RGT.

    Ref: Franceschi, Donini, Frasconi, Pontil, "Forward and reverse gradient-based
    hyperparameter optimization", ICML 2017.
    """

    tracks_trajectory = True

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, ul_model, ll_model, ll_var, ul_var,
                         solver_config)

    def compute_gradients(self, ll_feed_dict, ul_feed_dict, auxiliary_model, max_loss_iter=0,
                          next_operation=None, **kwargs):
        self.require_terminal("RAD", next_operation)
        params = self.selected_params(auxiliary_model, kwargs)
        upper_loss = self.upper_loss_at(ul_feed_dict, auxiliary_model, params)
        self.add_hypergradient(upper_loss, auxiliary_model)
        return self.finished(upper_loss)
