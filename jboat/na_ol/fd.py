"""FD: DARTS' finite-difference (second-order) hyper-gradient."""

import jittor as jt

from ..errors import ConfigError
from ..higher_jit.utils import grads_with_zeros
from ..operation_registry import register_class
from ..options import Option
from ..utils.objectives import StepObjective
from ..utils.op_utils import list_tensor_norm
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
        radius: ``r``; the step is ``ε = r / ‖v‖`` (DARTS).

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
    when that gradient vanishes). ``h`` is the LL objective (GDA: at
    ``α = alpha_init``), ``s`` the LL learning rate. For ``K = 1`` this is the
    derivative of the one-step-unrolled UL loss, exact in the limit ``r → 0`` (and
    for any ``r`` when ``h`` is quadratic in ``w``). The perturbed weights are
    evaluated functionally, so the real LL weights are never modified. Memory
    O(|y|): no trajectory is kept.

    Ref: Liu, Simonyan, Yang, "DARTS: Differentiable architecture search", ICLR 2019.
    """

    options = (
        Option("r", "float", 0.01, low=0.0, low_open=True,
               doc="finite-difference radius; the step is r / ||grad_y F||"),
    )

    @classmethod
    def check_combination(cls, config):
        if "RGT" in (config.get("na_op") or ()):
            raise ConfigError("FD and RGT cannot be combined: FD's correction assumes the "
                              "lower-level steps start from the real LL weights, which RGT "
                              "truncation moves. Remove RGT, or use RAD with RGT.")

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, ul_model, ll_model, ll_var, ul_var,
                         solver_config)
        self.radius = solver_config["FD"]["r"]
        self.lr = float(solver_config["lower_level_opt"].lr)
        self.objective = StepObjective.from_config(ll_objective, solver_config)
        self.positions = lower_level_positions(ll_model, self.ll_var)

    def compute_gradients(self, ll_feed_dict, ul_feed_dict, auxiliary_model, max_loss_iter=0,
                          hyper_gradient_finished=False, next_operation=None, **kwargs):
        if hyper_gradient_finished:
            raise ConfigError("FD found the hyper-gradient already computed; it must be "
                              "the last operator of na_op.")
        self.require_terminal("FD", next_operation)
        y_sel = self.selected_params(auxiliary_model, kwargs)
        upper_loss = self.upper_loss_at(ul_feed_dict, auxiliary_model, y_sel)
        positions, params = trainable_entries(y_sel, self.positions)
        v = grads_with_zeros(upper_loss, params)
        if self.reduce_full_data is not None:   # the same full-data direction on every rank
            v = self.reduce_full_data([vi.detach() for vi in v])
        weights = [p.detach() for p in self.ll_model.parameters()]
        direction = [None] * len(weights)
        for i, vi in zip(positions, v):
            direction[i] = vi.detach()

        def grad_x_at(point):
            lower_loss = self.objective(0, ll_feed_dict, ul_feed_dict, self.ul_model,
                                        auxiliary_model, params=point)
            return grads_with_zeros(lower_loss, self.ul_var)

        hvp = mixed_derivative_product(grad_x_at, weights, direction, self.radius)
        extra = [g * (-self.lr) for g in hvp]
        self.add_hypergradient(upper_loss, auxiliary_model, extra=extra)
        return self.finished(upper_loss)
