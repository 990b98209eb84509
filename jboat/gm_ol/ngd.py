"""NGD: naive gradient descent on the lower level, recording the trajectory."""

import jittor as jt

from ..distributed import data_parallel_reduction
from ..operation_registry import register_class
from ..utils.objectives import StepObjective
from ..utils.op_utils import stop_grads
from .dynamical_system import DynamicalSystem

__all__ = ["NGD", "run_inner_loop"]


def run_inner_loop(objective, feeds, ul_model, aux_model, aux_opt, steps, first_step=0,
                   grad_callback=None, monitor=None, step_losses=None):
    """Take ``steps`` differentiable LL steps from the latest fast weights.

    Args:
        objective: a :class:`StepObjective` (``h_k``).
        feeds: ``(ll_feed_dict, ul_feed_dict)``.
        first_step: global index ``k`` of the first step (for GDA's ``α_k``).
        grad_callback: applied to each step's gradients (``stop_grads`` for FOA).
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
    """Take ``steps`` LL steps that back-propagation will not see (RGT).

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
    """Naive gradient descent: ``K`` differentiable LL steps on the fast weights.

    Ref: Franceschi et al., "Bilevel programming for hyperparameter optimization and
    meta-learning", ICML 2018.

    With RGT the first ``T`` steps are taken outside the recorded graph; with PTT
    the UL loss is monitored along the trajectory and the 1-based index of its
    (first) maximum is the result; with FOA every step gradient is a constant.
    Memory: O(K·|y|) while the trajectory is tracked, O(|y|) otherwise.
    """

    gm_terminal = True

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, lower_loop,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, lower_loop, ul_model, ll_model,
                         solver_config)
        na_ops = solver_config.get("na_op") or ()
        self.truncate_iter = solver_config["RGT"]["truncate_iter"] if "RGT" in na_ops else 0
        self.pessimistic = "PTT" in na_ops
        self.first_order = "FOA" in na_ops
        self.objective = StepObjective(ll_objective)
        # data_parallel: PTT's argmax is taken over the full-data UL losses
        self.reduce_full_data = data_parallel_reduction(solver_config)

    def optimize(self, ll_feed_dict, ul_feed_dict, auxiliary_model, auxiliary_opt,
                 current_iter, next_operation=None, **kwargs):
        objective = self.objective
        if kwargs.get("gda_loss") is not None:
            objective = StepObjective(self.ll_objective, kwargs["gda_loss"],
                                      kwargs["alpha"], kwargs["alpha_decay"])
        feeds = (ll_feed_dict, ul_feed_dict)
        T = self.truncate_iter
        if T > 0:
            truncate_trajectory(objective, feeds, self.ul_model, auxiliary_model,
                                auxiliary_opt, T, step_losses=kwargs.get("step_losses"))
        monitor = None
        if self.pessimistic:
            def monitor(weights):
                return self.ul_objective(ul_feed_dict, self.ul_model, auxiliary_model,
                                         params=weights)
        values = run_inner_loop(objective, feeds, self.ul_model, auxiliary_model,
                                auxiliary_opt, self.lower_loop - T, first_step=T,
                                grad_callback=stop_grads if self.first_order else None,
                                monitor=monitor, step_losses=kwargs.get("step_losses"))
        result = -1
        if values:
            # one host synchronisation after the loop, not one per step
            stacked = jt.stack([v.reshape(1) for v in values]).reshape(-1)
            if self.reduce_full_data is not None:
                stacked = self.reduce_full_data([stacked])[0]
            result = 1 + int(stacked.numpy().argmax())
        if next_operation is None:
            return result
        return self._pass_on(ll_feed_dict, ul_feed_dict, auxiliary_model, auxiliary_opt,
                             current_iter, max_loss_iter=result, **kwargs)
