"""MESO: Moreau-envelope-based single-loop method (MEHA)."""

from ..utils.op_utils import grads_with_zeros
from ..operation_registry import register_class
from ..options import Option
from ._common import FirstOrderOperator, snapshot, squared_norm, state_vars

__all__ = ["MESO", "penalty_parameter", "proximal_update"]


def penalty_parameter(c0, current_iter, power=0.25):
    """``c_k = c0 · (k+1)^{1/4}``: the weight of the Moreau-envelope penalty relative
    to ``F`` (the UL objective enters as ``F / c_k``)."""
    return c0 * (current_iter + 1) ** power


def proximal_update(theta, grad_theta, y, eta, gamma):
    """``θ − η(∇_θ f(x,θ) + γ(θ − y))``: one gradient step on the Moreau-envelope
    subproblem ``min_θ f(x,θ) + (γ/2)||θ − y||²`` (values only, fresh leaves)."""
    return [(t - (g + (t - v) * gamma) * eta).detach()
            for t, g, v in zip(theta, grad_theta, y)]


@register_class
class MESO(FirstOrderOperator):
    """MEHA: single-loop, Hessian-free method on the Moreau-envelope reformulation
    ``min F(x,y)  s.t.  f(x,y) − v_γ(x,y) ≤ 0``,
    ``v_γ(x,y) = min_θ f(x,θ) + (γ/2)||θ − y||²``.

    State: ``θ``, a snapshot of the LL variables taken at construction; it persists
    across calls and across the tasks of a batch. One call with
    ``c_k = c0·(k+1)^{1/4}`` (``k`` = ``current_iter``, ``γ`` = ``gamma_1``):

    1. ``θ ← θ − η(∇_θ f(x,θ) + γ(θ − y))`` (``y`` = current LL variables);
    2. LL-optimizer step of ``y`` along
       ``∇_y[F/c_k + f − (γ/2)||y − θ||²] = ∇_yF/c_k + ∇_y f − γ(y − θ)`` with the new
       ``θ`` held constant (upstream differentiates through ``θ``'s update, which
       scales the proximal term by ``1 − ηγ``);
    3. adds ``∇_x[F(x,y)/c_k + f(x,y) − f(x,θ)]`` at the new ``y`` and ``θ`` to the
       UL buffers. Returns the value of that bracket.

    ``y_hat_lr`` is accepted for compatibility and unused (upstream builds an optimizer
    with it that never steps). Because ``c_k`` grows slowly, the iterates approach the
    bilevel solution with a bias of order ``1/c_k``; a larger ``c0`` weights the LL
    feasibility more (and shrinks the effective UL step ``lr/c_k`` on ``F``).

    Memory: O(|y|) (``θ``). Cost per call: three LL-loss and one UL-loss gradient.

    Ref: Liu, Liu, Yao, Zeng, Zhang, "Moreau envelope for nonconvex bi-level
    optimization: a single-loop and Hessian-free solution strategy", ICML 2024.
    """

    role = "fo"
    options = (
        Option("eta", "float", 0.1, low=0.0, low_open=True, doc="step size η of the θ update"),
        Option("gamma_1", "float", 0.1, low=0.0, low_open=True,
               doc="proximal parameter γ of the Moreau envelope"),
        Option("c0", "float", 5.0, low=0.0, low_open=True,
               doc="initial penalty parameter c_0 (c_k = c_0 (k+1)^(1/4))"),
        Option("y_hat_lr", "float", 0.01, low=0.0, doc="unused (kept for old configs)"),
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.theta = snapshot(self.ll_var)

    def state_dict(self):
        return {"theta": list(self.theta)}

    def load_state_dict(self, state):
        self.theta = state_vars(state["theta"])

    def optimize(self, ll_feed_dict, ul_feed_dict, current_iter, weights=None, step_losses=None):
        s = self.settings
        c_k = penalty_parameter(s["c0"], current_iter)
        gamma = s["gamma_1"]
        grad_theta = grads_with_zeros(self.lower_loss(ll_feed_dict, self.theta), self.theta)
        self.theta = proximal_update(self.theta, grad_theta, snapshot(self.ll_var), s["eta"],
                                     gamma)

        proximity = squared_norm([v - t for v, t in zip(self.ll_var, self.theta)])
        objective_y = (self.upper_loss(ul_feed_dict) / c_k + self.lower_loss(ll_feed_dict)
                       - proximity * (gamma / 2.0))
        self.lower_step(grads_with_zeros(objective_y, self.ll_var))

        objective_x = (self.upper_loss(ul_feed_dict) / c_k + self.lower_loss(ll_feed_dict)
                       - self.lower_loss(ll_feed_dict, self.theta))
        return self.result(objective_x, grads_with_zeros(objective_x, self.ul_var))
