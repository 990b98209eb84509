"""VFO: value-function-based first-order method (BOME)."""

import jittor as jt

from ..utils.op_utils import grads_with_zeros
from ..operation_registry import register_class
from ..options import Option
from ..utils.op_utils import list_tensor_matmul
from ._common import FirstOrderOperator, snapshot

__all__ = ["VFO", "bome_direction"]


def bome_direction(grad_F, grad_q, gap, u1, eps=1e-8):
    """BOME's combined direction ``d = ∇F + λ∇q``.

    ``λ = max(0, (u1·q − <∇F, ∇q>) / (||∇q||² + eps))``: the smallest multiplier for
    which ``<d, ∇q> ≥ u1·q``, i.e. a step along ``−d`` decreases the value-function
    gap ``q`` at rate ``u1·q`` while staying as close as possible to ``−∇F``.

    Args:
        grad_F, grad_q: aligned lists (the y-part then the x-part).
        gap: ``q`` (a scalar Var or a float).
    Returns:
        ``(λ, d)`` with ``λ`` a float and ``d`` a list aligned with the inputs.
    """
    gap = gap if isinstance(gap, jt.Var) else jt.array(float(gap))
    # one host synchronisation for the three scalars
    gap_v, cross, sq = jt.stack([gap.reshape(1), list_tensor_matmul(grad_F, grad_q).reshape(1),
                                 list_tensor_matmul(grad_q, grad_q).reshape(1)]).reshape(-1).numpy()
    lam = max(0.0, float(u1 * gap_v - cross) / (float(sq) + eps))
    return lam, [gF + gq * lam for gF, gq in zip(grad_F, grad_q)]


@register_class
class VFO(FirstOrderOperator):
    """BOME: a first-order method on the value-function reformulation
    ``min F(x,y)  s.t.  q(x,y) = f(x,y) − min_θ f(x,θ) ≤ 0``.

    One call (``y`` = real LL variables, ``x`` = UL variables):

    1. ``ŷ`` = snapshot of ``y`` (warm start), ``K`` plain-SGD steps (lr
       ``y_hat_lr``, no momentum) on ``f(x, ŷ)``; then ``ŷ`` is frozen;
    2. ``q = f(x,y) − f(x,ŷ)`` (``ŷ`` constant, its ``x``-dependence kept);
    3. ``∇F = (∇_y F, ∇_x F)``, ``∇q = (∇_y f(x,y), ∇_x f(x,y) − ∇_x f(x,ŷ))``;
    4. ``λ = max(0, (u1·q − <∇F,∇q>)/(||∇q||² + 1e-8))``, ``d = ∇F + λ∇q``
       (inner products over the y-part in ``ll_var`` order and the x-part in
       ``ul_var`` order);
    5. one LL-optimizer step of ``y`` along exactly ``d_y`` (no pre-descent of the
       real LL model, unlike torch upstream); ``d_x`` goes to the UL buffers.

    Returns ``F(x,y)`` before the LL step. ``eta`` (BOME's ``η`` of
    ``φ = η||∇q||²``) is accepted for compatibility and unused: like both upstreams
    the gap target is ``u1·q``.

    Behaviour worth knowing: the multiplier grows like ``|∇F|/|∇_y f|`` as ``y``
    approaches ``y*(x)``, so with constant step sizes the iterates settle in a
    neighbourhood of a KKT point whose radius shrinks with the step sizes (BOME
    proves convergence to an ε-KKT point, not exact convergence).

    Memory: O(|y|) (one snapshot). Cost per call: ``K + 2`` LL-loss gradients and
    one UL-loss gradient.

    Ref: Liu, Ye, Wright, Stone, Liu, "BOME! Bilevel optimization made easy: a simple
    first-order approach", NeurIPS 2022.
    """

    role = "fo"
    options = (
        Option("y_hat_lr", "float", 0.2, low=0.0, low_open=True,
               doc="plain-SGD step size of the inner estimate ŷ"),
        Option("u1", "float", 1.0, low=0.0, doc="target decrease rate of the gap q"),
        Option("eta", "float", 0.5, low=0.0, doc="unused (BOME's η; kept for old configs)"),
    )

    def optimize(self, ll_feed_dict, ul_feed_dict, current_iter, weights=None, step_losses=None):
        y_hat = self.descend_snapshot(ll_feed_dict, snapshot(self.ll_var),
                                      self.settings["y_hat_lr"], self.lower_loop)
        targets = self.ll_var + self.ul_var
        upper = self.upper_loss(ul_feed_dict)
        gap = self.lower_loss(ll_feed_dict) - self.lower_loss(ll_feed_dict, y_hat)
        grad_F = grads_with_zeros(upper, targets)
        grad_q = grads_with_zeros(gap, targets)
        _, direction = bome_direction(grad_F, grad_q, gap, self.settings["u1"])
        n = len(self.ll_var)
        self.lower_step(direction[:n])
        return self.result(upper, direction[n:])
