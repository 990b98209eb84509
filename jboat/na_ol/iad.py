"""IAD: initialisation-based auto-differentiation (the MAML meta-gradient)."""

from ..errors import ConfigError
from ..operation_registry import register_class
from .hyper_gradient import ReverseModeHyperGradient

__all__ = ["IAD", "initial_weights_for"]


def initial_weights_for(ul_var, ul_model, initial_weights):
    """The initial fast weights ``y_0`` matched with ``ul_var``.

    ``initial_weights`` is aligned with the LL model's parameters; the LL and UL
    models have the same structure (checked at build time), so the ``j``-th entry of
    ``ul_var`` — the ``i``-th parameter of ``ul_model`` — meets ``y_0[i]``. Entries
    of ``ul_var`` that are not parameters of ``ul_model`` are matched by position.
    """
    index_of = {id(p): i for i, p in enumerate(ul_model.parameters())}
    return [initial_weights[index_of.get(id(var), j)] for j, var in enumerate(ul_var)]


@register_class
class IAD(ReverseModeHyperGradient):
    """The meta-gradient w.r.t. the LL initialisation (MAML).

    Terminal: ``F_sel = F(x, y_sel)`` and ``dF_sel/dy_0`` through the recorded
    trajectory ``y_0 → … → y_sel`` is added to ``ul_var``'s buffers (matched
    through the models' common structure; typically ``ul_model is ll_model`` and
    ``ul_var`` are the meta-parameters). Over tasks with ``accumulate_grad`` the
    per-task meta-gradients are summed. Exact derivative of the unrolled task loss.
    Followed by a terminal that accepts it (an implicit one), it hands on
    ``y_0`` (aligned with ``ul_var``) as the variables to differentiate w.r.t.
    (through the trajectory). Memory
    O(K·|y|), or O((K/c + c)·|y|) with ``IAD.checkpoint_every: c`` (steps replayed
    from checkpoints in the backward pass; not with a following terminal). The LL
    model keeps its weights (no warm start: they are the meta-parameters).

    Ref: Finn, Abbeel, Levine, "Model-agnostic meta-learning for fast adaptation of
    deep networks", ICML 2017.
    """

    keeps_lower_model = True
    #: the initial LL weights are its variables (a learned initialisation excludes it)
    owns_initial_weights = True
    retargets = True
    chain_stage = (1, 0)

    @classmethod
    def check_combination(cls, config):
        super().check_combination(config)
        ll_model = config.get("lower_level_model")
        ul_model = config.get("upper_level_model")
        if ll_model is None or ul_model is None or ll_model is ul_model:
            return
        ll_params, ul_params = list(ll_model.parameters()), list(ul_model.parameters())
        mismatch = len(ll_params) != len(ul_params) or any(
            tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype
            for a, b in zip(ll_params, ul_params))
        if mismatch:
            def describe(params):
                return [f"{tuple(p.shape)}:{p.dtype}" for p in params]
            raise ConfigError(
                "IAD writes the meta-gradient w.r.t. the initial LL weights into the UL "
                "variables, so lower_level_model and upper_level_model must have the same "
                f"parameters (count, shapes, dtypes); got LL {describe(ll_params)} and UL "
                f"{describe(ul_params)}. Use the same model for both (meta-learning) or "
                "choose another na_op terminal.")
        ul_var = config.get("upper_level_var")
        if ul_var is not None and len(ul_var) > len(ll_params):
            raise ConfigError(f"IAD matches upper_level_var with the {len(ll_params)} LL "
                              f"parameters, got {len(ul_var)} UL variables; pass "
                              f"list(upper_level_model.parameters()).")

    def targets(self, trajectory):
        return initial_weights_for(self.ul_var, self.ul_model, trajectory.initial())

    def hypergradient(self, trajectory, ll_feed_dict, ul_feed_dict, wrt=None):
        return self.differentiate_through(trajectory, ul_feed_dict, self.targets(trajectory))
