"""PTT: pessimistic trajectory truncation (IAPTT-GM)."""

from ..errors import ConfigError
from ..operation_registry import register_class
from .hyper_gradient import HyperGradient

__all__ = ["PTT"]


@register_class
class PTT(HyperGradient):
    """Pre-operator: evaluate the hyper-gradient at the LL step with the largest UL loss.

    NGD records ``F(x, y_t)`` after each step ``t = 1..K`` and returns
    ``k* = 1 + argmax_t F(x, y_t)`` (first maximum) as ``max_loss_iter``. PTT passes
    ``y_sel = y_{k*} = aux.parameters(time=k*)`` to the terminal operator, which
    therefore back-propagates through the first ``k*`` steps only:
    ``dF(x, y_{k*}(x))/dx``. Needs the recorded trajectory (memory O(K·|y|)).

    Ref: Liu, Liu, Zeng, Zhang, "Towards gradient-based bilevel optimization with
    non-convex followers and beyond", NeurIPS 2021 (IAPTT-GM).
    """

    na_stage = "pre"
    tracks_trajectory = True

    @classmethod
    def check_combination(cls, config):
        if "NGD" not in (config.get("gm_op") or ()):
            raise ConfigError("PTT selects the LL step with the largest UL loss, which NGD "
                              "computes; add NGD to gm_op or remove PTT from na_op.")

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, ul_model, ll_model, ll_var, ul_var,
                         solver_config)

    def compute_gradients(self, ll_feed_dict, ul_feed_dict, auxiliary_model, max_loss_iter=0,
                          hyper_gradient_finished=False, next_operation=None, **kwargs):
        if hyper_gradient_finished:
            raise ConfigError("PTT must run before the terminal operator in na_op.")
        if next_operation is None:
            raise ConfigError("PTT needs a terminal operator after it in na_op "
                              "(e.g. na_op: [PTT, RAD]).")
        if not isinstance(max_loss_iter, int) or max_loss_iter <= 0:
            raise ValueError(f"PTT needs the 1-based index of the LL step with the largest "
                             f"UL loss (max_loss_iter >= 1), got {max_loss_iter!r}; it is "
                             f"produced by NGD when PTT is in na_op.")
        if kwargs.get("lower_model_params") is None:
            kwargs["lower_model_params"] = auxiliary_model.parameters(time=max_loss_iter)
        return dict(kwargs, ll_feed_dict=ll_feed_dict, ul_feed_dict=ul_feed_dict,
                    auxiliary_model=auxiliary_model, max_loss_iter=max_loss_iter,
                    hyper_gradient_finished=False)
