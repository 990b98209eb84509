"""GDA: gradient descent aggregation (BDA) of the UL and LL objectives."""

from ..errors import ConfigError
from ..operation_registry import register_class
from ..options import Option
from .dynamical_system import DynamicalSystem

__all__ = ["GDA"]


@register_class
class GDA(DynamicalSystem):
    """Pass-through stage: the following NGD/DM step along the aggregated objective
    ``h_k = gda_loss(...)`` with weight ``α_k = alpha_init · alpha_decay^k``
    (passed as ``ll_feed_dict["alpha"]`` in a copy of the feed dict).

    Ref: Liu, Mu, Yuan, Zeng, Zhang, "A generic first-order algorithmic framework
    for bi-level programming beyond lower-level singleton", ICML 2020.
    """

    options = (
        Option("alpha_init", "float", 0.5, low=0.0, high=1.0, low_open=True, high_open=True,
               doc="aggregation weight α_0 of the UL objective"),
        Option("alpha_decay", "float", 0.9, low=0.0, high=1.0, low_open=True,
               doc="per-step decay factor of α"),
    )

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, lower_loop,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, lower_loop, ul_model, ll_model,
                         solver_config)
        self.alpha_init = solver_config["GDA"]["alpha_init"]
        self.alpha_decay = solver_config["GDA"]["alpha_decay"]
        self.gda_loss = solver_config.get("gda_loss")

    def optimize(self, ll_feed_dict, ul_feed_dict, auxiliary_model, auxiliary_opt,
                 current_iter, next_operation=None, **kwargs):
        if next_operation is None:
            raise ConfigError("GDA must be followed by NGD or DM in gm_op.")
        if self.gda_loss is None:
            raise ConfigError("GDA needs a 'gda_loss' entry in loss_config.")
        kwargs.update(gda_loss=self.gda_loss, alpha=self.alpha_init,
                      alpha_decay=self.alpha_decay)
        return self._pass_on(ll_feed_dict, ul_feed_dict, auxiliary_model, auxiliary_opt,
                             current_iter, **kwargs)
