"""DI: dynamic initialisation, the LL starting point learned by the UL objective."""

from ..errors import ConfigError
from ..operation_registry import register_class
from ..options import Option
from .dynamical_system import DynamicalSystem

__all__ = ["DI"]


@register_class
class DI(DynamicalSystem):
    """Pass-through stage marking the LL initial point as an auxiliary variable.

    The selected NA operator adds ``∂F(x, y_sel(y_0))/∂y_0`` to the LL variables'
    buffers; after the inner loop ``Problem`` applies an optimizer of the UL
    optimizer's class with learning rate ``DI.lr`` to ``lower_level_var`` (after the
    ``copy_last_param`` warm start, so the next iteration starts from
    ``y_K - step``).

    Ref: Liu, Liu, Zeng, Zhang, "Towards gradient-based bilevel optimization with
    non-convex followers and beyond" (IAPTT-GM), NeurIPS 2021.
    """

    options = (
        Option("lr", "float", None, low=0.0, low_open=True,
               doc="learning rate of the initialisation optimizer (default: the UL "
                   "optimizer's lr)"),
    )

    @classmethod
    def check_combination(cls, config):
        if "IAD" in config["na_op"]:
            raise ConfigError("DI and IAD cannot be combined: IAD already differentiates "
                              "w.r.t. the initial LL weights (the meta-parameters). Remove "
                              "DI from gm_op or IAD from na_op.")
        if "DM" in config["gm_op"]:
            raise ConfigError("DI cannot be combined with DM: DM computes its own UL "
                              "gradient and produces no initialisation gradient. Remove DI.")

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, lower_loop,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, lower_loop, ul_model, ll_model,
                         solver_config)

    def optimize(self, ll_feed_dict, ul_feed_dict, auxiliary_model, auxiliary_opt,
                 current_iter, next_operation=None, **kwargs):
        if next_operation is None:
            raise ConfigError("DI must be followed by NGD or DM in gm_op.")
        return self._pass_on(ll_feed_dict, ul_feed_dict, auxiliary_model, auxiliary_opt,
                             current_iter, **kwargs)
