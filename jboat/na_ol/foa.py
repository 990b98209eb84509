"""FOA: first-order approximation of the trajectory derivative (first-order MAML)."""

from ..operation_registry import register_class
from .hyper_gradient import HyperGradient

__all__ = ["FOA"]


@register_class
class FOA(HyperGradient):
    """Pre-operator: treat every LL step gradient as a constant.

    Sets the plan's ``first_order``: each step is
    ``y_{t+1} = y_t - s·sg(∇_y h(x, y_t))``, so with plain SGD ``∂y_K/∂y_0 = I`` and
    ``∂y_K/∂x = 0``. With the MAML terminal the result is first-order MAML,
    ``∇_y F(x, y_K)`` written to the meta-parameters; with a selected step it applies
    at ``y_{k*}``. Without an operator that differentiates through the trajectory it
    has no effect; a warning is logged at construction.

    Refs: Finn, Abbeel, Levine, "Model-agnostic meta-learning for fast adaptation of
    deep networks", ICML 2017; Nichol, Achiam, Schulman, "On first-order
    meta-learning algorithms", arXiv:1803.02999, 2018.
    """

    na_stage = "pre"
    chain_stage = (0, 1)
    effect_on_trajectory = "only removes second-order terms from the recorded lower-level steps"

    @classmethod
    def configure_plan(cls, plan, config):
        plan.first_order = True
