"""NGD: naive gradient descent on the lower level, recording the trajectory."""

import jittor as jt

from ..operation_registry import register_class
from ..plan import ReplayTrajectory, Trajectory
from ..utils import checkpoint as ck
from ..utils.op_utils import stop_grads
from .dynamical_system import DynamicalSystem

__all__ = ["NGD", "run_inner_loop", "truncate_trajectory", "replayable_step",
           "run_checkpointed_loop"]


def run_inner_loop(objective, feeds, ul_model, aux_model, aux_opt, steps, first_step=0,
                   grad_callback=None, monitor=None, step_losses=None):
    """Take ``steps`` differentiable LL steps from the latest fast weights (and the
    inner optimizer's current state): global steps ``first_step .. first_step+steps-1``.

    Args:
        objective: a :class:`jboat.utils.objectives.StepObjective` (``h_k``).
        feeds: ``(ll_feed_dict, ul_feed_dict)``.
        first_step: global index ``k`` of the first step (for the weight ``α_k``).
        grad_callback: applied to each step's gradients (``stop_grads``: first order).
        monitor: optional callable ``monitor(fast_weights) -> scalar Var``, evaluated
            without gradient after each step; the values are returned (not synced).
        step_losses: optional list; each step's objective value is appended
            (detached, not synced) for the caller's finiteness check.

    Returns:
        list of monitored values (empty without ``monitor``).
    """
    ll_feed, ul_feed = feeds
    values = []
    for k in range(first_step, first_step + steps):
        loss = objective(k, ll_feed, ul_feed, ul_model, aux_model)
        if step_losses is not None:
            step_losses.append(loss.detach())
        new_params = aux_opt.step(loss, grad_callback=grad_callback)
        if monitor is not None:
            with jt.no_grad():
                values.append(monitor(new_params).detach())
    return values


def truncate_trajectory(objective, feeds, ul_model, aux_model, aux_opt, steps,
                        step_losses=None):
    """Take ``steps`` LL steps that back-propagation will not see.

    The steps use the inner optimizer's rule (its state carries on), gradients are
    evaluated at each iterate, and nothing real is modified. The result ``y_T`` is
    installed as the new initial fast weights as ``y_0 + sg(y_T - y_0)``: same value,
    identity derivative to the original ``y_0``.
    """
    ll_feed, ul_feed = feeds
    start = aux_model.parameters(time=0)
    weights = aux_model.parameters()
    for k in range(steps):
        loss = objective(k, ll_feed, ul_feed, ul_model, aux_model, params=weights)
        if step_losses is not None:
            step_losses.append(loss.detach())
        weights = aux_opt.step(loss, params=weights, grad_callback=stop_grads, record=False)
        weights = [w.detach() if not w.is_stop_grad() else w for w in weights]
    aux_opt.detach_state()
    aux_model.reset_initial_params(
        [y0 if y0.is_stop_grad() else y0 + (yT - y0).detach()
         for y0, yT in zip(start, weights)])


def replayable_step(objective, feeds, ul_model, aux_model, aux_opt, first_step=0,
                    grad_callback=None):
    """The inner optimizer's step as a pure function for checkpointed reverse mode.

    Returns ``(step, state_0)``: ``step(state, j)`` takes global step
    ``first_step + j`` from ``state = fast weights + the inner optimizer's state
    Vars`` (:meth:`jboat.higher_jit.DifferentiableOptimizer.flat_state`) and returns
    the next state, differentiably; ``state_0`` is the latest fast weights and the
    optimizer's current state. The non-Var part of the optimizer state (e.g. Adam's
    step count) before step ``j`` is remembered the first time step ``j`` runs, so
    replays reproduce it. ``step.loss`` holds the objective (detached) of the last
    call.
    """
    ll_feed, ul_feed = feeds
    params = aux_model.parameters()
    n = len(params)
    trainable = aux_model.trainable_mask
    layout, opt_values = aux_opt.flat_state()
    layouts = {0: layout}

    def step(state, j):
        # checkpoints are detached copies: buffers must stay constants of the step
        weights = [w if trainable[i] else w.stop_grad() for i, w in enumerate(state[:n])]
        aux_opt.load_flat_state(layouts[j], list(state[n:]))
        loss = objective(first_step + j, ll_feed, ul_feed, ul_model, aux_model, params=weights)
        new_weights = aux_opt.step(loss, params=weights, grad_callback=grad_callback,
                                   record=False)
        next_layout, next_values = aux_opt.flat_state()
        layouts.setdefault(j + 1, next_layout)
        step.loss = loss.detach()
        return list(new_weights) + list(next_values)

    return step, list(params) + list(opt_values)


def run_checkpointed_loop(objective, feeds, ul_model, aux_model, aux_opt, steps, checkpoint,
                          first_step=0, grad_callback=None, monitor=None, step_losses=None):
    """Take ``steps`` LL steps without keeping their graph, storing every ``c``-th
    ``(fast weights, optimizer state)`` (:func:`jboat.utils.checkpoint.run_checkpointed`).

    Each step is executed before the next one is built (together with its loss and the
    monitored value), so memory holds the checkpoints and one step, and every step
    replays the same compiled kernels. Returns ``(step, checkpoints, monitored)``;
    the patched model's latest fast weights become the last ones.
    """
    step, state = replayable_step(objective, feeds, ul_model, aux_model, aux_opt,
                                  first_step=first_step, grad_callback=grad_callback)
    n = len(aux_model.parameters())

    def forward_step(state, j):
        new_state = step(state, j)
        pending = list(new_state) + [step.loss]
        if step_losses is not None:
            step_losses.append(step.loss)
        jt.sync(pending)
        return new_state

    def watch(state, j):
        with jt.no_grad():
            value = monitor(state[:n]).detach()
        value.sync()
        return value

    checkpoints = ck.run_checkpointed(forward_step, state, steps, every=checkpoint.every,
                                      monitor=None if monitor is None else watch)
    aux_model.update_params(checkpoints.final[:n])
    aux_opt.detach_state()
    return step, checkpoints, checkpoints.monitored


def _worst_step(values, reduce):
    """``1 + argmax`` of the monitored UL losses (one host synchronisation)."""
    stacked = jt.stack([v.reshape(1) for v in values]).reshape(-1)
    if reduce is not None:   # the argmax over the full-data UL losses
        stacked = reduce([stacked])[0]
    return 1 + int(stacked.numpy().argmax())


@register_class
class NGD(DynamicalSystem):
    """Naive gradient descent: ``K`` differentiable LL steps on the fast weights,
    run as the :class:`jboat.plan.InnerLoopPlan` says.

    Ref: Franceschi et al., "Bilevel programming for hyperparameter optimization and
    meta-learning", ICML 2018.

    With ``plan.truncate = T`` the first ``T`` steps are taken outside the recorded
    graph; with ``plan.select_worst`` the UL loss is monitored along the trajectory
    and the 1-based index of its (first) maximum is selected; with
    ``plan.first_order`` every step gradient is a constant. With
    ``plan.checkpoint`` the recorded steps keep no graph: every ``c``-th (fast
    weights, optimizer state) pair is stored and a :class:`jboat.plan.ReplayTrajectory`
    is returned.
    Memory: O(K·|y|) while the trajectory is tracked, O((K/c + c)·|y|) with
    checkpoints, O(|y|) otherwise.
    """

    gm_terminal = True
    runs_inner_loop = True
    chain_stage = (1, 0)

    def run(self, ll_feed_dict, ul_feed_dict, auxiliary_model, auxiliary_opt,
            step_losses=None):
        """Run the plan's inner loop; returns the :class:`jboat.plan.Trajectory`."""
        plan = self.plan
        feeds = (ll_feed_dict, ul_feed_dict)
        T = plan.truncate
        if T > 0:
            truncate_trajectory(plan.objective, feeds, self.ul_model, auxiliary_model,
                                auxiliary_opt, T, step_losses=step_losses)
        monitor = None
        if plan.select_worst:
            def monitor(weights):
                return self.ul_objective(ul_feed_dict, self.ul_model, auxiliary_model,
                                         params=weights)
        callback = stop_grads if plan.first_order else None
        if plan.checkpoint is not None and plan.record:
            initial = auxiliary_model.parameters(time=0)
            step, checkpoints, values = run_checkpointed_loop(
                plan.objective, feeds, self.ul_model, auxiliary_model, auxiliary_opt,
                plan.steps - T, plan.checkpoint, first_step=T, grad_callback=callback,
                monitor=monitor, step_losses=step_losses)
            selected = _worst_step(values, plan.reduce) if values else None
            evaluated = ck.state_at(step, checkpoints, checkpoints.num_steps
                                    if selected is None else selected)
            return ReplayTrajectory(auxiliary_model, plan.steps, T, selected, step, checkpoints,
                                    initial, evaluated[:len(initial)], plan.checkpoint.replay)
        values = run_inner_loop(plan.objective, feeds, self.ul_model, auxiliary_model,
                                auxiliary_opt, plan.steps - T, first_step=T,
                                grad_callback=callback, monitor=monitor,
                                step_losses=step_losses)
        # one host synchronisation after the loop, not one per step
        selected = _worst_step(values, plan.reduce) if values else None
        return Trajectory(auxiliary_model, plan.steps, truncated=T, selected=selected)
