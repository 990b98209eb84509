"""FOA: first-order approximation of the trajectory derivative (first-order MAML)."""

from ..errors import ConfigError
from ..operation_registry import register_class
from ._lower_level import warn_without_trajectory
from .hyper_gradient import HyperGradient

__all__ = ["FOA"]


@register_class
class FOA(HyperGradient):
    """Pre-operator: treat every LL step gradient as a constant.

    The effect lives in NGD, which passes ``grad_callback = stop_grads`` to each
    step when FOA is in ``na_op``: ``y_{t+1} = y_t - s·sg(∇_y h(x, y_t))``, so with
    plain SGD ``∂y_K/∂y_0 = I`` and ``∂y_K/∂x = 0``. With IAD as terminal the
    result is first-order MAML, ``∇_y F(x, y_K)`` written to the meta-parameters;
    with PTT it applies at ``y_{k*}``. Without a trajectory-tracking operator (PTT,
    RAD, IAD) it has no effect; a warning is logged at construction.

    Refs: Finn, Abbeel, Levine, "Model-agnostic meta-learning for fast adaptation of
    deep networks", ICML 2017; Nichol, Achiam, Schulman, "On first-order
    meta-learning algorithms", arXiv:1803.02999, 2018.
    """

    na_stage = "pre"
    stops_step_gradients = True

    @classmethod
    def check_combination(cls, config):
        if "NGD" not in (config.get("gm_op") or ()):
            raise ConfigError("FOA makes NGD's lower-level steps first-order; add NGD to "
                              "gm_op or remove FOA from na_op.")

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, ul_model, ll_model, ll_var, ul_var,
                         solver_config)
        warn_without_trajectory("FOA", "only removes second-order terms from the "
                                "recorded lower-level steps", solver_config)

    def compute_gradients(self, ll_feed_dict, ul_feed_dict, auxiliary_model, max_loss_iter=0,
                          hyper_gradient_finished=False, next_operation=None, **kwargs):
        if hyper_gradient_finished:
            raise ConfigError("FOA must run before the terminal operator in na_op.")
        if next_operation is None:
            raise ConfigError("FOA needs a terminal operator after it in na_op "
                              "(e.g. na_op: [FOA, IAD]).")
        return dict(kwargs, ll_feed_dict=ll_feed_dict, ul_feed_dict=ul_feed_dict,
                    auxiliary_model=auxiliary_model, max_loss_iter=max_loss_iter,
                    hyper_gradient_finished=False)
