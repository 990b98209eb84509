"""Typed state handed between operators: the inner-loop plan, the trajectory and the
hyper-gradient.

``Problem`` builds one :class:`InnerLoopPlan` when it is constructed: it starts from
the plain loop (``K`` steps on the LL objective) and every selected operator adjusts
it through its ``configure_plan(plan, config)`` class method. The loop runner (the
gm operator that runs the inner loop) executes the plan and returns a
:class:`Trajectory`; the terminal na operator turns the trajectory into
:class:`HyperGrads`; ``Problem`` writes them into the gradient buffers and takes the
steps. No operator reads another operator's name.

Checkpointed reverse mode fits this split: the loop runner takes steps
``[first, last)`` from the latest fast weights and the inner optimizer's state, so a
segment can be replayed from a saved ``(weights, optimizer state)`` pair.
"""

import dataclasses
import logging
from typing import Callable, List, Optional

from .utils.objectives import StepObjective

__all__ = ["InnerLoopPlan", "Trajectory", "HyperGrads", "build_plan"]

logger = logging.getLogger("jboat")


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
    plan.record = any(cls.tracks_trajectory for cls in classes)
    for cls in classes:
        if cls.effect_on_trajectory and not plan.record:
            logger.warning(
                "%s has no effect with na_op %s: it %s, but no selected operator "
                "differentiates through the lower-level trajectory (remove %s, or select "
                "an operator that does).", cls.__name__, list(config.get("na_op") or ()),
                cls.effect_on_trajectory, cls.__name__)
    return plan
