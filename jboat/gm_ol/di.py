"""DI: dynamic initialisation, the LL starting point learned by the UL objective."""

from ..operation_registry import register_class
from ..options import Option
from .dynamical_system import DynamicalSystem

__all__ = ["DI"]


@register_class
class DI(DynamicalSystem):
    """Plan stage: the LL initial point is learned.

    Sets the plan's ``learn_init``: the terminal na operator also returns
    ``∂F(x, y_sel(y_0))/∂y_0``, which ``Problem`` adds to the LL variables' buffers;
    after the inner loop ``Problem`` applies an optimizer of the UL optimizer's class
    with learning rate ``DI.lr`` to ``lower_level_var`` (after the ``copy_last_param``
    warm start, so the next iteration starts from ``y_K - step``).

    Ref: Liu, Liu, Zeng, Zhang, "Towards gradient-based bilevel optimization with
    non-convex followers and beyond" (IAPTT-GM), NeurIPS 2021.
    """

    chain_stage = (0, 1)
    excludes = {
        "owns_initial_weights": "{other} already differentiates w.r.t. the initial LL "
                                "weights (the meta-parameters)",
        "computes_upper_gradient": "{other} computes its own UL gradient and produces no "
                                   "initialisation gradient",
    }
    options = (
        Option("lr", "float", None, low=0.0, low_open=True,
               doc="learning rate of the initialisation optimizer (default: the UL "
                   "optimizer's lr)"),
    )

    @classmethod
    def configure_plan(cls, plan, config):
        plan.learn_init = True
        plan.init_lr = config["DI"]["lr"]
