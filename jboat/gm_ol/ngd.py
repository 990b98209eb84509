"""NGD: naive gradient descent on the lower level, recording the trajectory."""

import jittor as jt

from ..operation_registry import register_class
from ..plan import Trajectory
from ..utils.op_utils import stop_grads
from .dynamical_system import DynamicalSystem

__all__ = ["NGD", "run_inner_loop", "truncate_trajectory"]


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


@register_class
class NGD(DynamicalSystem):
    """Naive gradient descent: ``K`` differentiable LL steps on the fast weights,
    run as the :class:`jboat.plan.InnerLoopPlan` says.

    Ref: Franceschi et al., "Bilevel programming for hyperparameter optimization and
    meta-learning", ICML 2018.

    With ``plan.truncate = T`` the first ``T`` steps are taken outside the recorded
    graph; with ``plan.select_worst`` the UL loss is monitored along the trajectory
    and the 1-based index of its (first) maximum is selected; with
    ``plan.first_order`` every step gradient is a constant.
    Memory: O(K·|y|) while the trajectory is tracked, O(|y|) otherwise.
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
        values = run_inner_loop(plan.objective, feeds, self.ul_model, auxiliary_model,
                                auxiliary_opt, plan.steps - T, first_step=T,
                                grad_callback=stop_grads if plan.first_order else None,
                                monitor=monitor, step_losses=step_losses)
        selected = None
        if values:
            # one host synchronisation after the loop, not one per step
            stacked = jt.stack([v.reshape(1) for v in values]).reshape(-1)
            if plan.reduce is not None:   # the argmax over the full-data UL losses
                stacked = plan.reduce([stacked])[0]
            selected = 1 + int(stacked.numpy().argmax())
        return Trajectory(auxiliary_model, plan.steps, truncated=T, selected=selected)
