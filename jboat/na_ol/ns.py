"""NS: implicit differentiation with a truncated Neumann series."""

from ..operation_registry import register_class
from ..utils.op_utils import neumann_series
from .cg import ImplicitHyperGradient

__all__ = ["NS"]


@register_class
class NS(ImplicitHyperGradient):
    """Implicit hyper-gradient with the inverse Hessian replaced by a Neumann series.

    ``∇_x F - s ∇²_xy h · Σ_{i=0}^{k} (I - s∇²_yy h)^i ∇_y F`` at ``y_sel``, with
    ``k`` from the implicit operators' shared section; the sum stops early once a
    term's norm is below its ``tolerance`` (absolute). Since
    ``s Σ_{i≥0} (I - sH)^i = H⁻¹`` when ``‖I - sH‖ < 1``, this is exact in the limit
    ``k → ∞`` and ``y_sel → y*(x)``. One Hessian-vector product per term; memory
    O(|y|): no trajectory is kept.

    Ref: Lorraine, Vicol, Duvenaud, "Optimizing millions of hyperparameters by
    implicit differentiation", AISTATS 2020.
    """

    chain_stage = (2, 1)

    def solve(self, matvec, b):
        return neumann_series(lambda u: [ui - ai for ui, ai in zip(u, matvec(u))], b,
                              self.k, self.tolerance)
