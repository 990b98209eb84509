"""ALTO: alternating optimization (one LL step, then the partial UL gradient)."""

from ..utils.op_utils import grads_with_zeros
from ..operation_registry import register_class
from ._common import FirstOrderOperator

__all__ = ["ALTO"]


@register_class
class ALTO(FirstOrderOperator):
    """Alternating gradient steps: ``y ← LLopt(y, ∇_y f(x,y))``, then add
    ``∇_x F(x, y_new)`` (the *partial* derivative, ``y`` held fixed) to the UL buffers.
    Returns ``F(x, y_new)``. No options; ``K`` is unused.

    Not a consistent bilevel method: the UL step ignores how ``y*(x)`` moves with
    ``x`` (the implicit term ``(dy*/dx)ᵀ∇_yF``), so its fixed points solve
    ``∇_y f(x,y) = 0, ∇_x F(x,y) = 0`` rather than ``d F(x, y*(x))/dx = 0``. It is
    exact only when ``F`` does not depend on ``y`` through ``x`` (e.g. when the UL
    and LL variables coincide, as in some meta-learning set-ups). Useful as a cheap
    baseline.

    Memory: O(1) extra. Cost per call: one LL-loss and one UL-loss gradient.
    (No reference; BOAT's torch backend.)
    """

    role = "fo"
    uses_snapshots = False

    def optimize(self, ll_feed_dict, ul_feed_dict, current_iter, weights=None, step_losses=None):
        self.lower_step(grads_with_zeros(self.lower_loss(ll_feed_dict), self.ll_var))
        upper = self.upper_loss(ul_feed_dict)
        return self.result(upper, grads_with_zeros(upper, self.ul_var))
