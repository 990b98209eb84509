"""CG: implicit differentiation with a conjugate-gradient linear solve."""

from ..errors import ConfigError
from ..higher_jit.utils import grads_with_zeros
from ..operation_registry import register_class
from ..options import Option
from ..utils.objectives import StepObjective
from ..utils.op_utils import cg_step, update_tensor_grads, vjp
from ._lower_level import evaluation_step, lower_level_positions, trainable_entries
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
    trajectory is recorded (PTT, IAD) ``c`` and the VJP include the unrolled path
    (upstream behaviour, operators.md §5 item 29).

    Args:
        params: list of Var, the LL variables at the evaluation point ``y_sel``.
        hparams: list of Var w.r.t. which the result is taken (``ul_var``, or the
            initial weights passed on by IAD).
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


#: options of the ``CG`` section, shared by CG and NS
IMPLICIT_OPTIONS = (
    Option("k", "int", 10, low=1, doc="iterations of the CG solve / terms of the Neumann series"),
    Option("tolerance", "float", 1e-10, low=0.0,
           doc="stop once the residual (CG) or the last term (NS) is smaller"),
)


class ImplicitHyperGradient(HyperGradient):
    """Shared adapter of CG and NS: config → arguments of :func:`implicit_hypergradient`.

    ``h`` is the LL step objective at the evaluation point (GDA: ``α_{k*}`` with
    ``k*`` the number of LL steps taken up to ``y_sel``, operators.md §0.2).
    """

    config_section = "CG"
    options = IMPLICIT_OPTIONS
    second_order = True
    accepts_prefix = ("IAD",)

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, ll_var, ul_var,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, ul_model, ll_model, ll_var, ul_var,
                         solver_config)
        section = solver_config["CG"]
        self.k = section["k"]
        self.tolerance = section["tolerance"]
        self.lr = float(solver_config["lower_level_opt"].lr)
        self.lower_iters = solver_config["lower_iters"]
        self.objective = StepObjective.from_config(ll_objective, solver_config)
        self.positions = lower_level_positions(ll_model, self.ll_var)

    def solve(self, matvec, b):
        raise NotImplementedError

    def compute_gradients(self, ll_feed_dict, ul_feed_dict, auxiliary_model, max_loss_iter=0,
                          hyper_gradient_finished=False, next_operation=None, **kwargs):
        name = type(self).__name__
        if hyper_gradient_finished:
            raise ConfigError(f"{name} found the hyper-gradient already computed; it must "
                              f"be the last operator of na_op.")
        self.require_terminal(name, next_operation)
        y_sel = self.selected_params(auxiliary_model, kwargs)
        hparams = kwargs.get("hparams")
        hparams = list(hparams) if hparams is not None else self.ul_var
        step = evaluation_step(max_loss_iter, kwargs, self.lower_iters)
        upper_loss = self.upper_loss_at(ul_feed_dict, auxiliary_model, y_sel)
        lower_loss = self.objective(step, ll_feed_dict, ul_feed_dict, self.ul_model,
                                    auxiliary_model, params=y_sel)
        _, params = trainable_entries(y_sel, self.positions)
        grads = implicit_hypergradient(params, hparams, upper_loss, lower_loss, self.lr,
                                       self.solve, reduce=self.reduce_full_data)
        # hparams passed on by IAD are aligned with ul_var (positional match)
        update_tensor_grads(self.ul_var, grads)
        self.add_initial_weight_gradient(upper_loss, auxiliary_model)
        return self.finished(upper_loss)


@register_class
class CG(ImplicitHyperGradient):
    """Implicit hyper-gradient with a conjugate-gradient solve.

    ``∇_x F - s ∇²_xy h · v`` with ``v`` from at most ``CG.k`` CG iterations on
    ``s ∇²_yy h · v = ∇_y F`` (stop when the residual norm < ``CG.tolerance``),
    all at ``y_sel`` (the last LL iterate, or the PTT step). Exact in the limit
    ``y_sel → y*(x)`` and ``k ≥ dim(y)`` (exact arithmetic); needs ``∇²_yy h`` positive
    definite. Memory O(|y|): no trajectory is kept.

    Refs: Pedregosa, "Hyperparameter optimization with approximate gradient", ICML
    2016; Rajeswaran, Finn, Kakade, Levine, "Meta-learning with implicit gradients",
    NeurIPS 2019.
    """

    def solve(self, matvec, b):
        return cg_step(matvec, b, max_iter=self.k, epsilon=self.tolerance)
