"""RGT: reverse gradient truncation (truncated back-propagation)."""

from ..errors import ConfigError
from ..operation_registry import register_class
from ..options import Option
from .hyper_gradient import HyperGradient

__all__ = ["RGT"]


@register_class
class RGT(HyperGradient):
    """Pre-operator: back-propagate through the last ``K - T`` LL steps only.

    Sets the plan's ``truncate = T = RGT.truncate_iter``: the loop runner takes the
    first ``T`` steps outside the recorded graph and ``y_T`` becomes the initial
    point of the recorded trajectory (with an identity derivative to the real
    ``y_0``). With reverse mode as terminal the hyper-gradient is
    ``∂_x F + Σ_{t=T}^{K-1} (∂y_{t+1}/∂x)ᵀ μ_{t+1}`` — the unrolled derivative of
    the last ``K - T`` steps, evaluated along the true trajectory. Memory falls from
    O(K·|y|) to O((K - T)·|y|). Terminals count the step objective's weight from the
    true number of steps. Without an operator that differentiates through the
    trajectory it has no effect on the hyper-gradient; a warning is logged at
    construction.

    Ref: Shaban, Cheng, Hatch, Boots, "Truncated back-propagation for bilevel
    optimization", AISTATS 2019.
    """

    na_stage = "pre"
    chain_stage = (0, 2)
    #: the recorded loop starts at y_T, not at the real LL weights
    moves_loop_start = True
    effect_on_trajectory = "only shortens back-propagation through the recorded lower-level steps"
    options = (
        Option("truncate_iter", "int", low=1,
               doc="T, leading LL steps excluded from back-propagation (1 <= T < lower_iters)"),
    )

    @classmethod
    def check_combination(cls, config):
        T = config["RGT"]["truncate_iter"]
        K = config["lower_iters"]
        if T >= K:
            raise ConfigError(f"RGT.truncate_iter ({T}) must be smaller than lower_iters "
                              f"({K}); set truncate_iter to at most {K - 1} or raise "
                              f"lower_iters.")

    @classmethod
    def configure_plan(cls, plan, config):
        plan.truncate = config["RGT"]["truncate_iter"]
