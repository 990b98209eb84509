"""CG: implicit differentiation with a conjugate-gradient linear solve."""

from ..operation_registry import register_class
from ..options import Option
from ..utils.op_utils import cg_step, grads_with_zeros, vjp
from ._lower_level import lower_level_positions, trainable_entries
from .hyper_gradient import HyperGradient

__all__ = ["CG", "implicit_hypergradient", "IMPLICIT_OPTIONS"]


def implicit_hypergradient(params, hparams, upper_loss, lower_loss, lr, solve, reduce=None):
    """Implicit hyper-gradient at a (near-)fixed point of ``Φ(y) = y - s ∇_y h(x, y)``.

    With ``b = ∇_y F``, ``c = ∇_hparams F`` and the linear system
    ``A v = b``, ``A = I - ∂Φ/∂y = s ∇²_yy h`` (symmetric), returns
    ``c + VJP(Φ, hparams, v)``. With ``hparams = x`` and the exact solution this is
    ``∇_x F - ∇²_xy h (∇²_yy h)⁻¹ ∇_y F``, the implicit-function-theorem derivative
    of ``F(x, y*(x))`` when ``y`` solves ``∇_y h = 0``.

    Derivatives go through whatever graph links ``params`` to ``hparams``: when the
    trajectory is recorded (a selected step, or initial weights as ``hparams``) ``c``
    and the VJP include the unrolled path (upstream behaviour).

    Args:
        params: list of Var, the LL variables at the evaluation point ``y_sel``.
        hparams: list of Var w.r.t. which the result is taken (``ul_var``, or the
            initial weights a retargeting operator hands on).
        upper_loss, lower_loss: scalar Vars ``F(x, y_sel)`` and ``h(x, y_sel)``.
        lr: ``s``, the LL optimiser's learning rate.
        solve: ``solve(matvec, b) -> v ≈ A⁻¹ b`` on list-structured vectors, with
            ``matvec(u) = A u`` (one Hessian-vector product, detached).
        reduce: None, or a callable on a list of Vars returning its mean over
            data-parallel ranks: applied to ``b`` and to every ``matvec`` result so
            that the solve sees the full-data system (same ``v`` on every rank);
            ``c`` and the VJP stay per-rank (linear; the caller averages the result).

    Returns:
        list of Var aligned with ``hparams``.

    Cost: one HVP per solver iteration; memory O(|y|) beyond the graph of
    ``lower_loss`` (independent of the number of LL steps without a recorded
    trajectory). With ``reduce``: one all-reduce of ``|y|`` numbers for ``b`` and one
    per solver iteration.
    """
    params, hparams = list(params), list(hparams)
    grads = grads_with_zeros(upper_loss, params + hparams)
    b, c = grads[:len(params)], grads[len(params):]
    inner = grads_with_zeros(lower_loss, params)

    def matvec(u):
        products = [h.detach() * lr for h in vjp(inner, params, u)]
        return products if reduce is None else reduce(products)

    b = [bi.detach() for bi in b]
    v = solve(matvec, b if reduce is None else reduce(b))
    fixed_point_map = [p - g * lr for p, g in zip(params, inner)]
    correction = vjp(fixed_point_map, hparams, v)
    return [ci + gi for ci, gi in zip(c, correction)]


#: options of the ``CG`` section, shared by the implicit operators
IMPLICIT_OPTIONS = (
    Option("k", "int", 10, low=1, doc="iterations of the CG solve / terms of the Neumann series"),
    Option("tolerance", "float", 1e-10, low=0.0,
           doc="conjugate gradient: stop once ||r|| <= tolerance * ||b|| (relative); "
               "Neumann series: once the last term's norm is below it"),
)


class ImplicitHyperGradient(HyperGradient):
    """Shared adapter of the implicit operators: config and trajectory → arguments of
    :func:`implicit_hypergradient`. ``h`` is the plan's step objective at the
    evaluation point (its weight counted from the steps taken up to ``y_sel``)."""

    shared_section = "CG"
    options = IMPLICIT_OPTIONS
    accepts_retarget = True
    chain_stage = (2, 0)
    second_order = True

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, plan=None, **kwargs):
        super().__init__(ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                         solver_config, plan)
        section = solver_config[self.config_section]
        self.k = section["k"]
        self.tolerance = section["tolerance"]
        self.lr = float(solver_config["lower_level_opt"].lr)
        self.positions = lower_level_positions(ll_model, self.ll_var)

    def solve(self, matvec, b):
        raise NotImplementedError

    def hypergradient(self, trajectory, ll_feed_dict, ul_feed_dict, wrt=None):
        y_sel = trajectory.params()
        upper_loss = self.upper_loss_at(ul_feed_dict, trajectory, y_sel)
        lower_loss = self.step_objective_at(trajectory, ll_feed_dict, ul_feed_dict, y_sel)
        _, params = trainable_entries(y_sel, self.positions)
        grads = implicit_hypergradient(params, self.ul_var if wrt is None else wrt,
                                       upper_loss, lower_loss, self.lr, self.solve,
                                       reduce=self.plan.reduce)
        return self.with_initial(upper_loss, trajectory, grads)


@register_class
class CG(ImplicitHyperGradient):
    """Implicit hyper-gradient with a conjugate-gradient solve.

    ``∇_x F - s ∇²_xy h · v`` with ``v`` from at most ``CG.k`` CG iterations on
    ``s ∇²_yy h · v = ∇_y F`` (stop when ``||r|| <= CG.tolerance · ||∇_y F||``),
    all at ``y_sel`` (the last LL iterate, or the step the plan selects). Exact in the
    limit ``y_sel → y*(x)`` and ``k ≥ dim(y)`` (exact arithmetic); needs ``∇²_yy h``
    positive definite. Memory O(|y|): no trajectory is kept.

    Refs: Pedregosa, "Hyperparameter optimization with approximate gradient", ICML
    2016; Rajeswaran, Finn, Kakade, Levine, "Meta-learning with implicit gradients",
    NeurIPS 2019.
    """

    #: single-loop multiplier methods take an exact line-search step on their multiplier
    multiplier_rule = "line-search"

    def solve(self, matvec, b):
        return cg_step(matvec, b, max_iter=self.k, epsilon=self.tolerance)
