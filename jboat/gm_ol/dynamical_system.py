"""Base class of the lower-level (gradient-mapping) operators."""

from ..base import OperatorSpec
from ..operation_registry import register_class

__all__ = ["DynamicalSystem"]


@register_class
class DynamicalSystem(OperatorSpec):
    """Base of gm operators.

    Args:
        ll_objective: ``f(feed_dict, upper_model, lower_model, **kw) -> scalar Var``.
        ul_objective: ``F(feed_dict, upper_model, lower_model, **kw) -> scalar Var``.
        lower_loop: ``K``, lower-level steps per upper iteration.
        ul_model, ll_model: the upper- and lower-level ``jittor.Module``.
        solver_config: the normalised solver config (see ``jboat.config``).
        plan: the solver's :class:`jboat.plan.InnerLoopPlan`.

    Class attributes:
        gm_terminal: the operator runs the LL loop and may end the gm chain.
        runs_inner_loop: the operator runs the differentiable inner loop (it has
            :meth:`run`, returning a :class:`jboat.plan.Trajectory`).
    """

    gm_terminal = False
    runs_inner_loop = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "role" not in cls.__dict__:
            cls.role = "gm"

    def __init__(self, ll_objective, ul_objective, lower_loop, ul_model, ll_model,
                 solver_config, plan=None, **kwargs):
        self.ll_objective = ll_objective
        self.ul_objective = ul_objective
        self.lower_loop = lower_loop
        self.ul_model = ul_model
        self.ll_model = ll_model
        self.solver_config = solver_config
        self.plan = plan
