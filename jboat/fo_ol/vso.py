"""VSO: value-function-based sequential (interior-point) method (BVFIM)."""

from ..utils.op_utils import grads_with_zeros
from ..operation_registry import register_class
from ..options import Option
from ._common import FirstOrderOperator, FloatOrBool, sgd_update, snapshot, squared_norm

__all__ = ["VSO", "vso_schedule", "barrier_surrogate"]


def vso_schedule(settings, current_iter):
    """``(μ_z, μ_y, μ_b)`` at UL iteration ``k``: each coefficient divided by
    ``d = reg_decay · k + 1``."""
    d = settings["reg_decay"] * current_iter + 1.0
    return settings["ll_l2_reg"] / d, settings["ul_l2_reg"] / d, settings["ul_ln_reg"] / d


def barrier_surrogate(upper, lower, sq_norm, mu_y, mu_b, value_V):
    """``F + μ_y||y||² + (μ_b/V) f``: same gradient in ``y`` as
    ``F + μ_y||y||² − μ_b log(V + sg(f) − f)`` at the current ``y``, namely
    ``∇_y F + 2μ_y y + μ_b ∇_y f / V`` (one backward pass instead of two)."""
    return upper + sq_norm * mu_y + lower * (mu_b / value_V)


@register_class
class VSO(FirstOrderOperator):
    """Value-function-based interior-point method (BVFIM).

    With ``d = reg_decay·k + 1``, ``μ_z = ll_l2_reg/d``, ``μ_y = ul_l2_reg/d``,
    ``μ_b = ul_ln_reg/d`` (``k`` = ``current_iter``), one call does:

    1. ``z_loop`` LL-optimizer steps of the real LL variables ``z`` along
       ``∇_z[f(x,z) + μ_z||z||²]``;
    2. ``V = f(x,z) + μ_z||z||²`` (a number; must be positive, see below);
    3. ``y`` = snapshot of ``z``; ``K`` plain-SGD steps (lr ``z_lr``) along
       ``∇_y F(x,y) + 2μ_y y + μ_b ∇_y f(x,y)/V`` — the gradient of
       ``F + μ_y||y||² − μ_b log(V + sg(f(x,y)) − f(x,y))``: the log-barrier acts on
       ``y`` (no extra step after the loop);
    4. adds ``∇_x F(x,y) − μ_b (∇_x f(x,z) − ∇_x f(x,y)) / V`` to the UL buffers
       (``z`` and ``y`` fixed, ``V(x) = f(x,z) + μ_z||z||²`` differentiated in ``x``).

    Returns ``F(x,y)``. The real LL model keeps ``z``; ``y`` is discarded.
    ``||·||²`` is taken over ``lower_level_var``.

    Behaviour worth knowing: near ``z ≈ y*(x)`` steps 3-4 are a penalty method
    with weight ``ρ = μ_b/V`` on ``f(x,y) − f(x,z)``, so for fixed coefficients
    (``reg_decay = 0``) VSO converges to a point biased by ``O(1/ρ)`` (plus the
    truncation of the ``K``-step ``y`` loop). With ``reg_decay > 0`` ``ρ`` decays
    like ``1/k`` and the coupling to the LL problem fades. The barrier needs
    ``V > 0`` (LL losses such as cross-entropy are positive; add a constant to an
    LL loss that can be negative): a non-positive ``V`` raises ``FloatingPointError``
    (``Problem``'s NaN guard then rolls the iteration back).

    Memory: O(|y|) (one snapshot). Cost per call: ``z_loop + K + 1`` LL-loss
    gradients, ``K + 1`` UL-loss gradients.

    Ref: Liu, Liu, Yuan, Zeng, Zhang, "A value-function-based interior-point method
    for non-convex bi-level optimization", ICML 2021.
    """

    role = "fo"
    options = (
        Option("z_loop", "int", 20, low=0, doc="LL-optimizer steps of z per call"),
        Option("z_lr", "float", 0.01, low=0.0, low_open=True,
               doc="plain-SGD step size of the y loop (despite the name)"),
        Option("ll_l2_reg", "float", 0.0, low=0.0, doc="μ_z before decay (L2 weight on z)"),
        Option("ul_l2_reg", "float", 0.0, low=0.0, doc="μ_y before decay (L2 weight on y)"),
        Option("ul_ln_reg", "float", 50.0, low=0.0, doc="μ_b before decay (log-barrier weight)"),
        FloatOrBool("reg_decay", 0.0, low=0.0,
                    doc="d = reg_decay·k + 1 divides the coefficients; true = 1.0"),
    )

    def optimize(self, ll_feed_dict, ul_feed_dict, current_iter, weights=None, step_losses=None):
        mu_z, mu_y, mu_b = vso_schedule(self.settings, current_iter)
        for _ in range(self.settings["z_loop"]):
            regularised = self.lower_loss(ll_feed_dict) + mu_z * squared_norm(self.ll_var)
            self.lower_step(grads_with_zeros(regularised, self.ll_var))

        # V and its x-derivative use the real LL variables, which hold z now
        value_z = self.lower_loss(ll_feed_dict) + mu_z * squared_norm(self.ll_var)
        value_V = float(value_z.item())
        if not value_V > 0.0:
            raise FloatingPointError(
                f"VSO's log-barrier needs V = f(x, z) + mu_z*||z||^2 > 0, got {value_V!r}; "
                f"VSO is meant for non-negative lower-level losses: add a constant to the "
                f"lower-level loss or raise VSO.ll_l2_reg.")

        y = snapshot(self.ll_var)
        step = self.settings["z_lr"]
        for _ in range(self.lower_loop):
            surrogate = barrier_surrogate(self.upper_loss(ul_feed_dict, y),
                                          self.lower_loss(ll_feed_dict, y), squared_norm(y),
                                          mu_y, mu_b, value_V)
            y = sgd_update(y, grads_with_zeros(surrogate, y), step)

        upper = self.upper_loss(ul_feed_dict, y)
        # ∇_x[F(x,y) − μ_b log(sg(f(x,y)) + V(x) − f(x,y))] with y, z fixed
        slack = value_z - self.lower_loss(ll_feed_dict, y)
        return self.result(upper, grads_with_zeros(upper - slack * (mu_b / value_V), self.ul_var))
