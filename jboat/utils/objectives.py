"""The lower-level step objective, plain or aggregated with the UL objective."""

from ..errors import ConfigTypeError

__all__ = ["StepObjective"]


class StepObjective:
    """``h_k``: the objective of lower-level step ``k``.

    Without aggregation ``h_k = f``. With a ``gda_loss`` it is
    ``gda_loss(ll_feed ∪ {"alpha": α_k}, ul_feed, ul_model, lower_model)`` with
    ``α_k = alpha_init · alpha_decay^k``; the caller's feed dict is never modified
    (a shallow copy carries ``alpha``).
    """

    def __init__(self, ll_objective, gda_loss=None, alpha_init=0.0, alpha_decay=1.0):
        self.ll_objective = ll_objective
        self.gda_loss = gda_loss
        self.alpha_init = alpha_init
        self.alpha_decay = alpha_decay

    def with_aggregation(self, gda_loss, alpha_init, alpha_decay):
        """The aggregated objective ``gda_loss`` with weights ``α_k``."""
        return type(self)(self.ll_objective, gda_loss, alpha_init, alpha_decay)

    @property
    def aggregated(self):
        return self.gda_loss is not None

    def alpha(self, step):
        return self.alpha_init * self.alpha_decay ** step

    def __call__(self, step, ll_feed_dict, ul_feed_dict, ul_model, lower_model, **kwargs):
        if self.gda_loss is None:
            return self.ll_objective(ll_feed_dict, ul_model, lower_model, **kwargs)
        return self.at_alpha(self.alpha(step), ll_feed_dict, ul_feed_dict, ul_model,
                             lower_model, **kwargs)

    def at_alpha(self, alpha, ll_feed_dict, ul_feed_dict, ul_model, lower_model, **kwargs):
        """The aggregated objective at an explicit weight ``alpha``."""
        if not isinstance(ll_feed_dict, dict):
            raise ConfigTypeError("With GDA the lower-level feed must be a dict (the "
                                  "current alpha is passed in it as 'alpha'), got "
                                  f"{type(ll_feed_dict).__name__}.")
        feed = dict(ll_feed_dict)
        feed["alpha"] = alpha
        return self.gda_loss(feed, ul_feed_dict, ul_model, lower_model, **kwargs)
