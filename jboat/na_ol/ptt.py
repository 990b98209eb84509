"""PTT: pessimistic trajectory truncation (IAPTT-GM)."""

from ..operation_registry import register_class
from .hyper_gradient import HyperGradient

__all__ = ["PTT"]


@register_class
class PTT(HyperGradient):
    """Pre-operator: evaluate the hyper-gradient at the LL step with the largest UL loss.

    Sets the plan's ``select_worst``: the loop runner records ``F(x, y_t)`` after each
    recorded step ``t = 1..K`` and selects ``k* = 1 + argmax_t F(x, y_t)`` (first
    maximum); the terminal operator evaluates at ``y_sel = y_{k*}`` and therefore
    back-propagates through the first ``k*`` steps only: ``dF(x, y_{k*}(x))/dx``.
    Needs the recorded trajectory (memory O(K·|y|)).

    Ref: Liu, Liu, Zeng, Zhang, "Towards gradient-based bilevel optimization with
    non-convex followers and beyond", NeurIPS 2021 (IAPTT-GM).
    """

    na_stage = "pre"
    tracks_trajectory = True
    chain_stage = (0, 0)

    @classmethod
    def configure_plan(cls, plan, config):
        plan.select_worst = True
