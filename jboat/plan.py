"""Typed state handed between operators: the inner-loop plan, the trajectory and the
hyper-gradient.

``Problem`` builds one :class:`InnerLoopPlan` when it is constructed: it starts from
the plain loop (``K`` steps on the LL objective) and every selected operator adjusts
it through its ``configure_plan(plan, config)`` class method. The loop runner (the
gm operator that runs the inner loop) executes the plan and returns a
:class:`Trajectory`; the terminal na operator turns the trajectory into
:class:`HyperGrads`; ``Problem`` writes them into the gradient buffers and takes the
steps. No operator reads another operator's name.

Checkpointed reverse mode fits this split: with ``plan.checkpoint`` set, the loop
runner keeps every ``c``-th ``(fast weights, inner optimizer state)`` pair instead of
the graph of the loop, and returns a :class:`ReplayTrajectory`; terminals ask any
trajectory for the same thing, :meth:`Trajectory.gradients`, and the replayed one
answers by recomputing one segment at a time (:mod:`jboat.utils.checkpoint`).
"""

import dataclasses
import logging
from typing import Callable, List, Optional

import jittor as jt

from .higher_jit.utils import grads_with_zeros
from .utils import checkpoint as ck
from .utils.objectives import StepObjective

__all__ = ["InnerLoopPlan", "Checkpointing", "Trajectory", "ReplayTrajectory", "HyperGrads",
           "build_plan"]

logger = logging.getLogger("jboat")


@dataclasses.dataclass(frozen=True)
class Checkpointing:
    """Checkpointed reverse mode through the inner loop.

    Attributes:
        every: ``c``, a positive int, or ``"auto"`` (``ceil(sqrt(K - T))``).
        replay: ``"segment"`` (one VJP per segment, graph of ``c`` steps) or
            ``"step"`` (one VJP per step, graph of one step; the compiled kernels
            do not depend on ``K``). See :func:`jboat.utils.checkpoint.reverse_checkpointed`.
    """

    every: object = "auto"
    replay: str = "segment"


@dataclasses.dataclass
class InnerLoopPlan:
    """What the lower-level loop does, fixed at build time.

    Attributes:
        steps: ``K``, LL steps per upper iteration.
        objective: the step objective ``h_k`` (plain, or aggregated with a weight
            ``α_k``).
        truncate: ``T``, leading steps taken outside the recorded graph.
        select_worst: differentiate at the recorded step with the largest UL loss
            (first maximum) instead of the last one.
        first_order: every step gradient is a constant (``sg(∇_y h)``).
        learn_init: the initial LL weights receive ``dF/dy_0`` (written to the LL
            variables' buffers; ``Problem`` steps them with an initialisation optimizer
            of learning rate ``init_lr``, None: the UL optimizer's).
        record: the differentiable trajectory is kept (some selected operator
            differentiates through it).
        reduce: None, or (``data_parallel`` under MPI) a callable mapping a list of
            per-rank Vars to their means over ranks; operators apply it where a
            non-linear step needs the full-data value.
        checkpoint: None, or :class:`Checkpointing`: the recorded steps are not kept
            as a graph but replayed from checkpoints when a terminal differentiates
            through them (memory O((K - T)/c + c) states instead of O(K - T)).
    """

    steps: int
    objective: StepObjective
    truncate: int = 0
    select_worst: bool = False
    first_order: bool = False
    learn_init: bool = False
    init_lr: Optional[float] = None
    record: bool = False
    reduce: Optional[Callable] = None
    checkpoint: Optional[Checkpointing] = None


@dataclasses.dataclass
class Trajectory:
    """One run of the inner loop.

    Attributes:
        model: the patched LL model; ``model.parameters(time=t)`` are the fast
            weights after ``t`` recorded steps (``t = 0``: the start of the recorded
            history, i.e. ``y_T`` after a truncation).
        steps: ``K``, all steps taken.
        truncated: ``T``, steps taken before the recorded history starts.
        selected: ``k*``, the 1-based recorded step chosen by the plan's
            ``select_worst``, or None (the last step).
    """

    model: object
    steps: int
    truncated: int = 0
    selected: Optional[int] = None

    def params(self):
        """``y_sel``: the fast weights the hyper-gradient is evaluated at."""
        if self.selected is None:
            return self.model.parameters()
        return self.model.parameters(time=self.selected)

    def initial(self):
        """The fast weights at the start of the recorded history."""
        return self.model.parameters(time=0)

    @property
    def evaluation_step(self):
        """Number of LL steps taken up to ``y_sel`` (``T + k*``, or ``K``)."""
        if self.selected is None:
            return self.steps
        return self.truncated + self.selected

    @property
    def record(self):
        """The loop runner's entry of the iteration record (``k*``, or -1)."""
        return -1 if self.selected is None else self.selected

    def gradients(self, terminal, targets):
        """``(F, dF/d targets)`` for ``F = terminal(y_sel)`` (a scalar Var of the fast
        weights), differentiated through the recorded steps: ``targets`` may be
        hyperparameters the steps depend on and the fast weights at time 0."""
        value = terminal(self.params())
        return value, grads_with_zeros(value, list(targets))


class ReplayTrajectory(Trajectory):
    """A trajectory kept as checkpoints (:class:`Checkpointing`), not as a graph.

    Args:
        model: the patched LL model (its latest fast weights are the last ones).
        steps, truncated, selected: as in :class:`Trajectory`.
        step: the pure step ``step(state, j) -> state`` on ``state = fast weights +
            inner optimizer state``, ``j`` counted from the start of the recording.
        checkpoints: the :class:`jboat.utils.checkpoint.CheckpointedTrajectory` of
            the graph-free forward pass.
        initial: the fast weights at the start of the recording (differentiable
            functions of the real LL weights).
        evaluated: the detached fast weights at ``y_sel``.
        replay: ``"segment"`` or ``"step"``.
    """

    def __init__(self, model, steps, truncated, selected, step, checkpoints, initial,
                 evaluated, replay):
        super().__init__(model, steps, truncated=truncated, selected=selected)
        self.step = step
        self.checkpoints = checkpoints
        self._initial = list(initial)
        self._evaluated = list(evaluated)
        self.replay = replay

    def params(self):
        return list(self._evaluated)

    def initial(self):
        return list(self._initial)

    def gradients(self, terminal, targets):
        """As :meth:`Trajectory.gradients`, by checkpointed reverse mode: the backward
        pass replays the steps from the checkpoints; the gradient w.r.t. the state at
        time 0 is then pulled back through whatever ``y_0`` depends on (the real LL
        weights, a learned initialisation), and given as is for targets that are
        entries of ``y_0`` (MAML)."""
        targets = list(targets)
        n = len(self._initial)
        at_start = {id(v) for v in self._initial}
        hyper = [t for t in targets if id(t) not in at_start]
        stop = self.checkpoints.num_steps if self.selected is None else self.selected
        value = []
        grad_hyper, grad_start = ck.reverse_checkpointed(
            self.step, self.checkpoints, hyper, terminal=lambda state: terminal(state[:n]),
            stop=stop, replay=self.replay, value=value)
        pulled = [(y0, g) for y0, g in zip(self._initial, grad_start[:n])
                  if not y0.is_stop_grad()]
        through_start = [None] * len(targets)
        if pulled:
            total = sum((y0 * g).sum() for y0, g in pulled)
            through_start = grads_with_zeros(total, targets)
        by_id = dict(zip((id(h) for h in hyper), grad_hyper))
        grads = []
        for target, extra in zip(targets, through_start):
            direct = by_id.get(id(target))
            parts = [g for g in (direct, extra) if g is not None]
            grads.append(sum(parts[1:], parts[0]) if parts else jt.zeros_like(target))
        return value[0], grads


@dataclasses.dataclass
class HyperGrads:
    """What a terminal operator (or a single-loop solver) returns.

    Attributes:
        upper_loss: scalar Var ``F(x, y_sel)``.
        upper: gradients aligned with ``upper_level_var``.
        initial: ``(lower_level_var entry, gradient)`` pairs under a learned
            initialisation.
        upper_lr: None, or the learning rate ``Problem`` sets on every param group of
            the UL optimizer before its step (a schedule owned by the solver).
    """

    upper_loss: object
    upper: List
    initial: List = dataclasses.field(default_factory=list)
    upper_lr: Optional[float] = None


def build_plan(config, classes, ll_objective, reduce=None):
    """The plan of ``config`` (normalised): each class in ``classes`` configures it."""
    plan = InnerLoopPlan(steps=config["lower_iters"], objective=StepObjective(ll_objective),
                         reduce=reduce)
    for cls in classes:
        cls.configure_plan(plan, config)
    # a solver computing its own UL gradient (DM) never differentiates the trajectory
    plan.record = (any(cls.tracks_trajectory for cls in classes)
                   and not any(getattr(cls, "computes_upper_gradient", False)
                               for cls in classes))
    for cls in classes:
        if cls.effect_on_trajectory and not plan.record:
            logger.warning(
                "%s has no effect with na_op %s: it %s, but no selected operator "
                "differentiates through the lower-level trajectory (remove %s, or select "
                "an operator that does).", cls.__name__, list(config.get("na_op") or ()),
                cls.effect_on_trajectory, cls.__name__)
    return plan
