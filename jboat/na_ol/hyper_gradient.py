"""Base class of the hyper-gradient (numerical-approximation) operators."""

from ..base import OperatorSpec
from ..errors import ConfigError, ConfigTypeError
from ..operation_registry import get_registered_operation, register_class
from ..options import Option
from ..plan import Checkpointing, HyperGrads
from ..utils.op_utils import grads_with_zeros

__all__ = ["HyperGradient", "ReverseModeHyperGradient", "CHECKPOINT_OPTIONS"]


@register_class
class HyperGradient(OperatorSpec):
    """Base of na operators.

    A terminal operator is a function of the inner loop's
    :class:`jboat.plan.Trajectory` and the losses: :meth:`hypergradient` returns
    :class:`jboat.plan.HyperGrads`, which ``Problem`` writes into the buffers. A
    pre-operator only adjusts the :class:`jboat.plan.InnerLoopPlan` in
    ``configure_plan`` and does nothing at run time.

    Args:
        ll_objective, ul_objective: the LL/UL loss callables.
        ll_model, ul_model: the LL/UL ``jittor.Module``.
        ll_var, ul_var: lists of Vars; hyper-gradients are aligned with ``ul_var``.
        solver_config: the normalised solver config.
        plan: the :class:`jboat.plan.InnerLoopPlan` of the solver.

    Class attributes:
        na_stage: ``"pre"`` (adjusts the plan) or ``"terminal"``.
        retargets: a terminal that may run before another one and hands it other
            variables to differentiate (:meth:`targets`).
        accepts_retarget: a terminal that may follow a retargeting one.
    """

    na_stage = "terminal"
    retargets = False
    accepts_retarget = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "role" not in cls.__dict__:
            cls.role = "na"

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, plan=None, **kwargs):
        self.ll_objective = ll_objective
        self.ul_objective = ul_objective
        self.ul_model = ul_model
        self.ll_model = ll_model
        self.ll_var = list(ll_var)
        self.ul_var = list(ul_var)
        self.solver_config = solver_config
        self.plan = plan

    def targets(self, trajectory):
        """The variables a following terminal differentiates w.r.t. (None: ``ul_var``)."""
        return None

    def hypergradient(self, trajectory, ll_feed_dict, ul_feed_dict, wrt=None):
        """:class:`jboat.plan.HyperGrads` of this iteration. ``wrt``: variables to
        differentiate w.r.t. instead of ``ul_var`` (aligned with it), or None."""
        raise NotImplementedError("Terminal na operators implement hypergradient().")

    # -- shared steps -------------------------------------------------------------------
    def upper_loss_at(self, ul_feed_dict, trajectory, params):
        return self.ul_objective(ul_feed_dict, self.ul_model, trajectory.model, params=params)

    def step_objective_at(self, trajectory, ll_feed_dict, ul_feed_dict, params, step=None):
        """``h_k(x, params)`` with ``k`` the number of steps up to ``y_sel`` (default)."""
        step = trajectory.evaluation_step if step is None else step
        return self.plan.objective(step, ll_feed_dict, ul_feed_dict, self.ul_model,
                                   trajectory.model, params=params)

    def _initial_targets(self, trajectory):
        """Pairs (ll_var entry, its fast weight at time 0) under a learned initialisation."""
        if not self.plan.learn_init:
            return []
        initial = trajectory.initial()
        index_of = {id(p): i for i, p in enumerate(self.ll_model.parameters())}
        pairs = []
        for var in self.ll_var:
            i = index_of.get(id(var))
            if i is not None and not initial[i].is_stop_grad():
                pairs.append((var, initial[i]))
        return pairs

    def differentiate(self, upper_loss, trajectory, wrt=None, extra=None):
        """``d upper_loss / d wrt`` (+ ``extra``) and, under a learned initialisation,
        ``d upper_loss / d y_0``, in one backward pass."""
        targets = list(self.ul_var if wrt is None else wrt)
        pairs = self._initial_targets(trajectory)
        grads = grads_with_zeros(upper_loss, targets + [y0 for _, y0 in pairs])
        upper = grads[:len(targets)]
        if extra is not None:
            upper = [g + e for g, e in zip(upper, extra)]
        initial = [(var, g) for (var, _), g in zip(pairs, grads[len(targets):])]
        return HyperGrads(upper_loss, upper, initial)

    def differentiate_through(self, trajectory, ul_feed_dict, wrt=None):
        """``F(x, y_sel)`` and its derivative w.r.t. ``wrt`` (default ``ul_var``) and,
        under a learned initialisation, ``y_0``, back-propagated through the
        trajectory (:meth:`jboat.plan.Trajectory.gradients`: the recorded graph, or
        a replay from checkpoints)."""
        targets = list(self.ul_var if wrt is None else wrt)
        pairs = self._initial_targets(trajectory)

        def terminal(params):
            return self.upper_loss_at(ul_feed_dict, trajectory, params)

        upper_loss, grads = trajectory.gradients(terminal, targets + [y0 for _, y0 in pairs])
        initial = [(var, g) for (var, _), g in zip(pairs, grads[len(targets):])]
        return HyperGrads(upper_loss, grads[:len(targets)], initial)

    def with_initial(self, upper_loss, trajectory, upper):
        """:class:`HyperGrads` of given UL gradients plus the initial-weight ones."""
        pairs = self._initial_targets(trajectory)
        initial = []
        if pairs:
            grads = grads_with_zeros(upper_loss, [y0 for _, y0 in pairs])
            initial = [(var, g) for (var, _), g in zip(pairs, grads)]
        return HyperGrads(upper_loss, list(upper), initial)


#: options of the operators that back-propagate through the recorded trajectory
CHECKPOINT_OPTIONS = (
    Option("checkpoint_every", "any", None,
           doc="null: keep the graph of every LL step (memory O(K)); a positive int c or "
               "'auto' (about sqrt(K)): keep every c-th state and recompute the steps in "
               "the backward pass (memory O(K/c + c), about one extra forward pass per "
               "step; same hyper-gradient)"),
    Option("replay", "choice", "segment", choices=("segment", "step"),
           doc="with checkpoint_every: 'segment' takes one VJP per segment of c steps; "
               "'step' one VJP per step (graph of one step, a second extra forward, and "
               "compiled kernels independent of K)"),
)


class ReverseModeHyperGradient(HyperGradient):
    """Base of the terminals that back-propagate through the recorded LL steps, with
    optional checkpointing (options :data:`CHECKPOINT_OPTIONS`): the plan's
    ``checkpoint`` is set and the loop runner returns a trajectory that replays its
    steps from checkpoints (:class:`jboat.plan.ReplayTrajectory`)."""

    tracks_trajectory = True
    options = CHECKPOINT_OPTIONS

    @classmethod
    def checkpointing(cls, config):
        """The :class:`jboat.plan.Checkpointing` of ``config``'s section, or None."""
        section = config.get(cls.config_section) or {}
        every = section.get("checkpoint_every")
        if every is None:
            return None
        return Checkpointing(every=every, replay=section.get("replay", "segment"))

    @classmethod
    def check_combination(cls, config):
        section = config.get(cls.config_section) or {}
        every = section.get("checkpoint_every")
        if every is None:
            return
        where = f"{cls.config_section}.checkpoint_every"
        if isinstance(every, str):
            if every != "auto":
                raise ConfigError(f"{where} must be a positive integer, 'auto' or null, "
                                  f"got {every!r}; write e.g. checkpoint_every: auto.")
        elif isinstance(every, bool) or not isinstance(every, int):
            raise ConfigTypeError(f"{where} must be a positive integer, 'auto' or null, got "
                                  f"{every!r} ({type(every).__name__}); write e.g. "
                                  f"checkpoint_every: 10.")
        elif every < 1:
            raise ConfigError(f"{where} must be >= 1 (or 'auto'), got {every}.")
        others = [name for name in config.get("na_op") or ()
                  if name != cls.__name__
                  and getattr(get_registered_operation(name), "na_stage", None) == "terminal"]
        if others:
            raise ConfigError(
                f"{where} replays the trajectory for {cls.__name__}'s own reverse pass; "
                f"{others[0]} also differentiates through the lower-level steps and would "
                f"need their graph. Remove checkpoint_every, or use {cls.__name__} as the "
                f"only terminal operator.")

    @classmethod
    def configure_plan(cls, plan, config):
        plan.checkpoint = cls.checkpointing(config)
