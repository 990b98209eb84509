"""Base class of the lower-level (gradient-mapping) operators."""

from ..base import OperatorSpec
from ..operation_registry import register_class

__all__ = ["DynamicalSystem"]


@register_class
class DynamicalSystem(OperatorSpec):
    """Base of GM operators (and of FO operators, which run their own LL updates).

    Args:
        ll_objective: ``f(feed_dict, upper_model, lower_model, **kw) -> scalar Var``.
        ul_objective: ``F(feed_dict, upper_model, lower_model, **kw) -> scalar Var``.
        lower_loop: ``K``, lower-level steps per upper iteration.
        ul_model, ll_model: the upper- and lower-level ``jittor.Module``.
        solver_config: the normalised solver config (see ``jboat.config``).
    """

    #: GM operators that run the LL loop and may end the LL chain (NGD, DM)
    gm_terminal = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "role" not in cls.__dict__:
            cls.role = "gm"

    def __init__(self, ll_objective, ul_objective, lower_loop, ul_model, ll_model,
                 solver_config, **kwargs):
        self.ll_objective = ll_objective
        self.ul_objective = ul_objective
        self.lower_loop = lower_loop
        self.ul_model = ul_model
        self.ll_model = ll_model
        self.solver_config = solver_config

    def optimize(self, **kwargs):
        raise NotImplementedError("Subclasses implement optimize().")

    @staticmethod
    def _pass_on(ll_feed_dict, ul_feed_dict, auxiliary_model, auxiliary_opt, current_iter,
                 **kwargs):
        """The keyword arguments handed to the next operator of the chain."""
        return dict(ll_feed_dict=ll_feed_dict, ul_feed_dict=ul_feed_dict,
                    auxiliary_model=auxiliary_model, auxiliary_opt=auxiliary_opt,
                    current_iter=current_iter, **kwargs)
