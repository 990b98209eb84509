"""FD: DARTS' finite-difference (second-order) hyper-gradient."""

import jittor as jt

from ..operation_registry import register_class
from ..options import Option
from ..utils.op_utils import grads_with_zeros, list_tensor_norm
from ._lower_level import lower_level_positions, trainable_entries
from .hyper_gradient import HyperGradient

__all__ = ["FD", "mixed_derivative_product"]


def mixed_derivative_product(grad_x_at, weights, direction, radius):
    """Central difference ``(g(w + εv) - g(w - εv)) / (2ε) ≈ ∇²_{x,w} h · v``.

    Args:
        grad_x_at: callable ``weights -> ∇_x h(x, weights)`` (list aligned with x).
        weights: list of Var, the point ``w``; entries whose ``direction`` is None
            are not perturbed.
        direction: list of Var or None, ``v`` (same layout as ``weights``).
        radius: ``r``; the step is ``ε = r / ‖v‖``.

    Returns:
        list aligned with x (zeros when ``‖v‖ = 0``: no correction). The
        difference is exact for ``h`` quadratic in ``w`` (up to round-off) and has
        error O(ε²) otherwise. ``weights`` are never modified: the perturbed points
        are new lists, so nothing needs restoring. ``ε`` stays on the device (no
        host synchronisation).
    """
    norm = list_tensor_norm([d for d in direction if d is not None])
    # ‖v‖ = 0: any finite ε gives w ± εv = w and a zero difference
    eps = radius / jt.ternary(norm > 0, norm, jt.ones_like(norm))

    def shifted(sign):
        return [w if d is None else w + d * (sign * eps) for w, d in zip(weights, direction)]

    plus, minus = grad_x_at(shifted(1.0)), grad_x_at(shifted(-1.0))
    return [(gp - gm) / (2.0 * eps) for gp, gm in zip(plus, minus)]


@register_class
class FD(HyperGradient):
    """Terminal: DARTS' second-order approximation by finite differences.

    With ``y' = y_sel`` (unrolled weights) and ``w`` the real LL weights (the
    point the inner loop started from):
    ``∇_x F(x, y') - s · ∇²_{x,w} h(x, w) · ∇_{y'} F(x, y')``, the mixed derivative
    product taken by a central difference with ``ε = FD.r / ‖∇_{y'} F‖`` (skipped
    when that gradient vanishes). ``h`` is the plan's step objective at step 0 (an
    aggregated objective at its initial weight), ``s`` the LL learning rate. For
    ``K = 1`` this is the derivative of the one-step-unrolled UL loss, exact in the
    limit ``r → 0`` (and for any ``r`` when ``h`` is quadratic in ``w``). The perturbed weights are
    evaluated functionally, so the real LL weights are never modified. Memory
    O(|y|): no trajectory is kept.

    Ref: Liu, Simonyan, Yang, "DARTS: Differentiable architecture search", ICLR 2019.
    """

    options = (
        Option("r", "float", 0.01, low=0.0, low_open=True,
               doc="finite-difference radius; the step is r / ||grad_y F||"),
    )

    chain_stage = (1, 2)
    excludes = {"moves_loop_start": "the finite-difference correction assumes the "
                "lower-level steps start from the real LL weights, which {other} moves"}

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, plan=None, **kwargs):
        super().__init__(ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                         solver_config, plan)
        self.radius = solver_config["FD"]["r"]
        self.lr = float(solver_config["lower_level_opt"].lr)
        self.positions = lower_level_positions(ll_model, self.ll_var)

    def hypergradient(self, trajectory, ll_feed_dict, ul_feed_dict, wrt=None):
        y_sel = trajectory.params()
        upper_loss = self.upper_loss_at(ul_feed_dict, trajectory, y_sel)
        positions, params = trainable_entries(y_sel, self.positions)
        v = grads_with_zeros(upper_loss, params)
        if self.plan.reduce is not None:   # the same full-data direction on every rank
            v = self.plan.reduce([vi.detach() for vi in v])
        weights = [p.detach() for p in self.ll_model.parameters()]
        direction = [None] * len(weights)
        for i, vi in zip(positions, v):
            direction[i] = vi.detach()

        def grad_x_at(point):
            lower_loss = self.step_objective_at(trajectory, ll_feed_dict, ul_feed_dict,
                                                point, step=0)
            return grads_with_zeros(lower_loss, self.ul_var)

        hvp = mixed_derivative_product(grad_x_at, weights, direction, self.radius)
        return self.differentiate(upper_loss, trajectory, extra=[g * (-self.lr) for g in hvp])
