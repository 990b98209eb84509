"""GDA: gradient descent aggregation (BDA) of the UL and LL objectives."""

from ..errors import ConfigError
from ..operation_registry import register_class
from ..options import Option
from .dynamical_system import DynamicalSystem

__all__ = ["GDA"]


@register_class
class GDA(DynamicalSystem):
    """Plan stage: the LL steps follow the aggregated objective
    ``h_k = gda_loss(...)`` with weight ``α_k = alpha_init · alpha_decay^k`` (passed as
    ``ll_feed_dict["alpha"]`` in a copy of the feed dict).

    Ref: Liu, Mu, Yuan, Zeng, Zhang, "A generic first-order algorithmic framework
    for bi-level programming beyond lower-level singleton", ICML 2020.
    """

    chain_stage = (0, 0)
    #: the step objective is an aggregation with a weight α_k
    aggregates_objective = True
    options = (
        Option("alpha_init", "float", 0.5, low=0.0, high=1.0, low_open=True, high_open=True,
               doc="aggregation weight α_0 of the UL objective"),
        Option("alpha_decay", "float", 0.9, low=0.0, high=1.0, low_open=True,
               doc="per-step decay factor of α"),
    )

    @classmethod
    def configure_plan(cls, plan, config):
        if config.get("gda_loss") is None:
            raise ConfigError("GDA needs a 'gda_loss' entry in loss_config.")
        plan.objective = plan.objective.with_aggregation(
            config["gda_loss"], config["GDA"]["alpha_init"], config["GDA"]["alpha_decay"])
