"""RGT: reverse gradient truncation (truncated back-propagation)."""

from ..errors import ConfigError
from ..operation_registry import register_class
from ..options import Option
from ._lower_level import warn_without_trajectory
from .hyper_gradient import HyperGradient

__all__ = ["RGT"]


@register_class
class RGT(HyperGradient):
    """Pre-operator: back-propagate through the last ``K - T`` LL steps only.

    The truncation itself happens in NGD: the first ``T = RGT.truncate_iter`` steps
    are taken outside the recorded graph and ``y_T`` becomes the initial point of
    the recorded trajectory (with an identity derivative to the real ``y_0``). With
    RAD as terminal the hyper-gradient is
    ``∂_x F + Σ_{t=T}^{K-1} (∂y_{t+1}/∂x)ᵀ μ_{t+1}`` — the unrolled derivative of the
    last ``K - T`` steps, evaluated along the true trajectory. Memory falls from
    O(K·|y|) to O((K - T)·|y|).

    This operator selects ``y_sel = aux.parameters(time=max_loss_iter)`` (the PTT
    step if PTT ran, else the latest weights) and passes it on together with
    ``truncated_steps = T``, so that terminals count the GDA weight from the true
    number of steps. Without a trajectory-tracking operator (PTT, RAD, IAD) it has
    no effect on the hyper-gradient; a warning is logged at construction.

    Ref: Shaban, Cheng, Hatch, Boots, "Truncated back-propagation for bilevel
    optimization", AISTATS 2019.
    """

    na_stage = "pre"
    options = (
        Option("truncate_iter", "int", low=1,
               doc="T, leading LL steps excluded from back-propagation (1 <= T < lower_iters)"),
    )

    @classmethod
    def check_combination(cls, config):
        if "NGD" not in (config.get("gm_op") or ()):
            raise ConfigError("RGT truncates the trajectory that NGD records; add NGD to "
                              "gm_op or remove RGT from na_op.")
        T = config["RGT"]["truncate_iter"]
        K = config["lower_iters"]
        if T >= K:
            raise ConfigError(f"RGT.truncate_iter ({T}) must be smaller than lower_iters "
                              f"({K}); set truncate_iter to at most {K - 1} or raise "
                              f"lower_iters.")

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, ul_model, ll_model, ll_var, ul_var,
                         solver_config)
        self.truncate_iter = solver_config["RGT"]["truncate_iter"]
        warn_without_trajectory("RGT", "only shortens back-propagation through the "
                                "recorded lower-level steps", solver_config)

    def compute_gradients(self, ll_feed_dict, ul_feed_dict, auxiliary_model, max_loss_iter=0,
                          hyper_gradient_finished=False, next_operation=None, **kwargs):
        if hyper_gradient_finished:
            raise ConfigError("RGT must run before the terminal operator in na_op.")
        if next_operation is None:
            raise ConfigError("RGT needs a terminal operator after it in na_op "
                              "(e.g. na_op: [RGT, RAD]).")
        if kwargs.get("lower_model_params") is None:
            time = max_loss_iter if max_loss_iter and max_loss_iter > 0 else -1
            kwargs["lower_model_params"] = auxiliary_model.parameters(time=time)
        kwargs["truncated_steps"] = self.truncate_iter
        return dict(kwargs, ll_feed_dict=ll_feed_dict, ul_feed_dict=ul_feed_dict,
                    auxiliary_model=auxiliary_model, max_loss_iter=max_loss_iter,
                    hyper_gradient_finished=False)
