"""Maths on lists of Vars, gradient buffers and small helpers shared by operators.

Conventions: a "vector" is a list of Vars (e.g. aligned with ``ll_var``); inner
products and norms are taken over the concatenation of all entries.
"""

import jittor as jt

from ..distributed import no_implicit_optimizer_sync
from ..higher_jit.utils import grads_with_zeros, quiet_jittor_log

__all__ = [
    "grads_with_zeros", "list_tensor_matmul", "list_tensor_norm", "add_scaled", "stop_grads", "vjp",
    "update_tensor_grads", "read_custom_grads", "clear_custom_grads", "apply_custom_grads",
    "copy_parameter_from_list", "cg_step", "neumann_series",
]


# -- vectors -----------------------------------------------------------------------
def list_tensor_matmul(a, b):
    """``<a, b>`` = sum_i sum(a_i * b_i) (a scalar Var)."""
    total = None
    for ai, bi in zip(a, b):
        term = (ai * bi).sum()
        total = term if total is None else total + term
    return total if total is not None else jt.zeros(1).sum()


def list_tensor_norm(ts, p=2):
    """True p-norm of the concatenation of ``ts`` (a scalar Var)."""
    total = None
    for t in ts:
        term = (t.abs() ** p).sum() if p != 2 else (t * t).sum()
        total = term if total is None else total + term
    if total is None:
        return jt.zeros(1).sum()
    return total ** (1.0 / p)


def add_scaled(a, b, scale):
    """``a + scale * b`` entry-wise for two vectors."""
    return [ai + bi * scale for ai, bi in zip(a, b)]


def stop_grads(grads):
    """Detached copies of ``grads`` (None kept); the FOA gradient callback."""
    return [g.detach() if g is not None else None for g in grads]


# -- gradients -----------------------------------------------------------------------
def vjp(outputs, inputs, vectors):
    """Vector-Jacobian product: gradient of ``sum_j <outputs_j, vectors_j>``
    w.r.t. ``inputs`` (differentiable)."""
    return grads_with_zeros(list_tensor_matmul(outputs, vectors), inputs)


# -- gradient buffers (``var._custom_grad``) -------------------------------------------
def update_tensor_grads(variables, grads):
    """Accumulate detached ``grads`` into ``var._custom_grad`` (skips stop-grad
    variables and None gradients)."""
    for var, grad in zip(variables, grads):
        if grad is None or var.is_stop_grad():
            continue
        grad = grad.detach()
        previous = getattr(var, "_custom_grad", None)
        var._custom_grad = grad if previous is None else previous + grad


def read_custom_grads(variables):
    """Current buffer of each variable (zeros where nothing was accumulated)."""
    out = []
    for var in variables:
        grad = getattr(var, "_custom_grad", None)
        out.append(grad if grad is not None else jt.zeros(var.shape, var.dtype))
    return out


def clear_custom_grads(variables):
    for var in variables:
        if getattr(var, "_custom_grad", None) is not None:
            var._custom_grad = None


def apply_custom_grads(optimizer, variables):
    """Step ``optimizer`` with its own rule on the buffered gradients, then clear them.

    The optimizer sees the surrogate loss ``L = sum_i <p_i, sg(g_i)>`` whose gradient
    w.r.t. ``p_i`` is exactly ``g_i``, so Adam moments, step counts, momentum and
    per-group learning rates behave as after ``optimizer.step(loss)``. Parameters
    of the optimizer without a buffered gradient are left untouched (as PyTorch
    does for ``p.grad is None``). Under MPI the step is local: Jittor's implicit
    averaging of gradients across ranks is off (:class:`jboat.Problem` reduces the
    buffers itself). Returns True when a step was taken.
    """
    pending = {id(v): v for v in variables
               if getattr(v, "_custom_grad", None) is not None and not v.is_stop_grad()}
    managed = [p for group in optimizer.param_groups for p in group["params"]]
    with_grad = [p for p in managed if id(p) in pending]
    if not with_grad:
        clear_custom_grads(variables)
        return False
    frozen = [p for p in managed if id(p) not in pending and not p.is_stop_grad()]
    surrogate = list_tensor_matmul(with_grad, [p._custom_grad.detach() for p in with_grad])
    for p in frozen:
        p.stop_grad()
    try:
        # under MPI the buffers are already reduced (jboat.distributed); Jittor's own
        # averaging inside step() would reduce them again
        with quiet_jittor_log(), no_implicit_optimizer_sync():
            optimizer.step(surrogate)
    finally:
        for p in frozen:
            p.start_grad()
    clear_custom_grads(variables)
    return True


def copy_parameter_from_list(model, values):
    """Overwrite each trainable ``model.parameters()`` entry with a detached copy."""
    for p, value in zip(model.parameters(), values):
        if not p.is_stop_grad():
            p.update(value.detach())
    return model


# -- linear solves -----------------------------------------------------------------------
#: iterations between the host reads of a solver's "still running" flag (see cg_step)
HOST_CHECK_EVERY = 10


# The solvers' stopping rules run on the device. Each rule is a handful of scalar
# operations; on the CPU they are one small C++ kernel each (Jittor launches every
# scalar op separately, ~10 us apiece), compiled without -Ofast so that NaN tests
# hold (under fast-math Jittor's ``NaN == 0`` is True). On CUDA the same rules are
# written with Jittor ops.
_NO_FAST_MATH = {"FLAGS: -O2 ": 1}

_CG_ALPHA_SRC = """
    @alias(active, in0) @alias(rr, in1) @alias(pap, in2)
    bool zero = @pap(0) == 0 && !std::isnan((double)@pap(0));
    bool step = @active(0) != 0 && !zero;
    @out0(0) = step ? @rr(0) / @pap(0) : 0;
    @out1(0) = step ? 1 : 0;
"""

_CG_BETA_SRC = """
    @alias(step, in0) @alias(rr, in1) @alias(rr_new, in2) @alias(eps2, in3)
    double rn = @rr_new(0);
    bool below = rn <= (double)@eps2(0) && !std::isnan(rn);
    bool active = @step(0) != 0 && !below;
    bool zero = @rr(0) == 0 && !std::isnan((double)@rr(0));
    @out0(0) = (active && !zero) ? @rr_new(0) / @rr(0) : 0;
    @out1(0) = active ? 1 : 0;
    @out2(0) = active ? @rr_new(0) : @rr(0);
"""

_NS_LIVE_SRC = """
    @alias(live, in0) @alias(sumsq, in1) @alias(tol2, in2)
    double s = @sumsq(0);
    bool below = s < (double)@tol2(0) && !std::isnan(s);
    @out0(0) = (@live(0) != 0 && !below) ? 1 : 0;
"""


def _scalar_kernel(src, inputs, n_out):
    dtype = inputs[1].dtype
    with jt.flag_scope(compile_options=_NO_FAST_MATH):
        outs = jt.code([(1,)] * n_out, [dtype] * n_out,
                       [v.reshape(1).detach() for v in inputs],
                       cpu_header="#include <cmath>", cpu_src=src)
    # constants for differentiation (a code op has no derivative; jt.grad must not
    # walk into it when a later product with A differentiates through the iterates)
    outs = [o.stop_grad() for o in outs]
    return outs if n_out > 1 else outs[0]


def _scalar_kernels_enabled():
    return not jt.flags.use_cuda


def _is_zero(v):
    return jt.logical_and(v == 0, jt.logical_not(jt.isnan(v)))


def _is_below(v, bound):
    return jt.logical_and(v < bound, jt.logical_not(jt.isnan(v)))


def _mask(cond, like):
    return jt.ternary(cond, jt.ones_like(like), jt.zeros_like(like))


def _cg_alpha(active, rr, pAp):
    """``(alpha, step)``: ``rr / pAp`` and 1 while running and ``pAp != 0``, else 0 and 0."""
    if _scalar_kernels_enabled():
        return _scalar_kernel(_CG_ALPHA_SRC, [active, rr, pAp], 2)
    step = jt.logical_and(active != 0, jt.logical_not(_is_zero(pAp)))
    alpha = jt.ternary(step, rr / jt.ternary(step, pAp, jt.ones_like(pAp)), jt.zeros_like(rr))
    return alpha, _mask(step, rr)


def _cg_beta(step, rr, rr_new, eps2):
    """``(beta, active, rr)`` after a step: the direction weight, the running flag
    (stop once ``rr_new <= eps2``) and the residual norm² carried on."""
    if _scalar_kernels_enabled():
        return _scalar_kernel(_CG_BETA_SRC, [step, rr, rr_new, eps2], 3)
    below = jt.logical_and(rr_new <= eps2, jt.logical_not(jt.isnan(rr_new)))
    active = jt.logical_and(step != 0, jt.logical_not(below))
    usable = jt.logical_and(active, jt.logical_not(_is_zero(rr)))
    beta = jt.ternary(usable, rr_new / jt.ternary(usable, rr, jt.ones_like(rr)),
                      jt.zeros_like(rr))
    return beta, _mask(active, rr), jt.ternary(active, rr_new, rr)


def _ns_live(live, sumsq, tol2):
    """1 while summing and the last term's norm² is not below ``tol2``, else 0."""
    if _scalar_kernels_enabled():
        return _scalar_kernel(_NS_LIVE_SRC, [live, sumsq, tol2], 1)
    return _mask(jt.logical_and(live != 0, jt.logical_not(_is_below(sumsq, tol2))), sumsq)


def cg_step(Ax, b, max_iter=100, epsilon=1e-5, check_every=HOST_CHECK_EVERY):
    """Conjugate gradient for ``A x = b`` on list-structured vectors.

    ``A`` (given as the map ``Ax``) must be symmetric positive definite. Stops
    after ``max_iter`` iterations or once ``||r|| <= epsilon * ||b||`` (a relative
    rule, as scipy's ``cg`` and jaxopt's ``solve_cg``: the same ``epsilon`` works
    whatever the scale of ``b``); returns the latest iterate. A vanishing curvature
    ``<p, Ap> = 0`` stops the iteration. An absolute tolerance ``t`` (``||r|| < t``,
    the upstream rule) corresponds to ``epsilon = t / ||b||``.

    The stopping rules are applied on the device: once one fires, the step sizes
    become 0 and the iterate stays as it was, so the result equals the
    early-stopped one while no iteration waits for the host. Every
    ``check_every`` iterations (never when ``epsilon <= 0``, or with
    ``check_every=0``) the host reads the "still running" flag, only to skip the
    remaining products with ``A``. NaNs propagate to the result.
    Cost: one ``Ax`` per iteration; memory O(|b|).
    """
    x = [jt.zeros_like(bi) for bi in b]
    r = [bi.detach() for bi in b]
    p = list(r)
    rr = list_tensor_matmul(r, r)
    if epsilon > 0:
        eps2 = rr.reshape(1) * (float(epsilon) ** 2)   # (epsilon ||b||)², on the device
    else:
        eps2 = jt.full((1,), -1.0, rr.dtype)
    # the initial test; a NaN residual keeps iterating so NaNs reach the caller's guard
    _, active, _ = _cg_beta(jt.ones_like(rr), rr, rr, eps2)
    host_checks = epsilon > 0 and check_every and check_every > 0
    for i in range(max_iter):
        if host_checks and i > 0 and i % check_every == 0 and not bool(active.item()):
            break
        Ap = [a.detach() for a in Ax(p)]
        alpha, step = _cg_alpha(active, rr, list_tensor_matmul(p, Ap))
        x = add_scaled(x, p, alpha)                  # alpha = 0 once stopped: x, r stay
        r = add_scaled(r, Ap, -alpha)
        beta, active, rr = _cg_beta(step, rr, list_tensor_matmul(r, r), eps2)
        p = add_scaled(r, p, beta)
    return x


def neumann_series(apply_map, b, k, tol=1e-10, check_every=HOST_CHECK_EVERY):
    """``sum_{i=0}^{k} M^i b`` where ``apply_map(u) = M u`` (linear).

    Stops early when a term's norm falls below ``tol`` (that term is included).
    As in :func:`cg_step` the stop is applied on the device (the later terms are
    zeroed) and the host reads the flag only every ``check_every`` terms (never
    when ``tol <= 0``). Memory O(|b|).
    """
    term = [bi.detach() for bi in b]
    total = list(term)
    live = None                                       # 1 while summing, then 0
    tol2 = None
    host_checks = tol > 0 and check_every and check_every > 0
    for i in range(k):
        if host_checks and live is not None and i % check_every == 0 \
                and not bool(live.item()):
            break
        term = [t.detach() for t in apply_map(term)]
        total = [s + t for s, t in zip(total, term)]
        if tol > 0:
            sumsq = list_tensor_matmul(term, term)
            if live is None:
                live, tol2 = jt.ones_like(sumsq), jt.full((1,), float(tol) ** 2, sumsq.dtype)
            live = _ns_live(live, sumsq, tol2)
            term = [t * live.cast(t.dtype) for t in term]   # 0 from now on: M 0 = 0
    return total
