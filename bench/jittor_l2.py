"""The L2 problem in Jittor: jboat's Problem, and the hand-written floor.

``Floor`` is plain Jittor written for this one problem (no jboat, no shim): the
same maths as jboat's operators, the same per-iteration work (K SGD steps, the
hyper-gradient, an Adam step on x, the warm start of y), nothing else. It is the
speed jboat should stay close to.
"""

import jittor as jt
import numpy as np

import l2_problem as P


# -- models and losses (shared by jboat and the upstream JBOAT runner) ------------------------
class LogisticRegression(jt.Module):
    def __init__(self, features, classes):
        self.weight = jt.zeros((features, classes))
        self.bias = jt.zeros((classes,))

    def execute(self, x):
        return jt.matmul(x, self.weight) + self.bias


class LogStrength(jt.Module):
    def __init__(self, features):
        self.log_strength = jt.full((features,), P.INIT_LOG_STRENGTH)

    def execute(self):
        return self.log_strength


def lower_loss(feed, upper_model, lower_model, **kwargs):
    weight = kwargs["params"][0] if "params" in kwargs else lower_model.weight
    penalty = (jt.exp(upper_model()).reshape(-1, 1) * weight * weight).sum()
    return jt.nn.cross_entropy_loss(lower_model(feed["x"], **kwargs), feed["y"]) + 0.5 * penalty


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return jt.nn.cross_entropy_loss(lower_model(feed["x"], **kwargs), feed["y"])


def gda_loss(ll_feed, ul_feed, upper_model, lower_model, **kwargs):
    alpha = ll_feed["alpha"]
    return (alpha * upper_loss(ul_feed, upper_model, lower_model, **kwargs)
            + (1 - alpha) * lower_loss(ll_feed, upper_model, lower_model, **kwargs))


def to_jittor(data):
    return {"x": jt.array(data["x"]), "y": jt.array(data["y"])}


def models(size):
    _, _, features, classes = P.SIZES[size]
    return LogisticRegression(features, classes), LogStrength(features)


# -- jboat ---------------------------------------------------------------------------------------
def jboat_problem(gm_op, na_op, lower_iters, size, fo_op=None, lean=False):
    """A built ``jboat.Problem`` for the combination (with the shared settings)."""
    import jboat

    lower, upper = models(size)
    config = {
        "gm_op": gm_op, "na_op": na_op, "fo_op": fo_op, "lower_iters": lower_iters,
        "CG": {"k": P.CG_K, "tolerance": P.CG_TOLERANCE}, "FD": {"r": P.FD_R},
        "RGT": {"truncate_iter": P.rgt_truncate(lower_iters)}, "GDA": {"alpha_init": 0.5, "alpha_decay": 0.9},
        "lower_level_model": lower, "upper_level_model": upper,
        "lower_level_var": list(lower.parameters()), "upper_level_var": list(upper.parameters()),
        "lower_level_opt": jt.optim.SGD(lower.parameters(), lr=P.LL_LR),
        "upper_level_opt": jt.optim.Adam(upper.parameters(), lr=P.UL_LR),
    }
    for name in ("CG", "FD", "RGT", "GDA"):
        if name not in (gm_op or []) + (na_op or []) and not (name == "CG" and "NS" in (na_op or [])):
            config.pop(name)
    if lean:
        config.update(track_losses=False, nan_guard=False)
    losses = {"lower_level_loss": lower_loss, "upper_level_loss": upper_loss}
    if "GDA" in (gm_op or []):
        losses["gda_loss"] = gda_loss
    problem = jboat.Problem(config, losses)
    return problem.build_ll_solver().build_ul_solver()


# -- the hand-written floor ------------------------------------------------------------------------
def _dot(a, b):
    return sum((ai * bi).sum() for ai, bi in zip(a, b))


class Floor:
    """One UL iteration of RAD, CG, NS, FD or IGA written directly in Jittor."""

    METHODS = ("RAD", "CG", "NS", "FD", "IGA")

    def __init__(self, method, lower_iters, size):
        assert method in self.METHODS, method
        _, _, features, classes = P.SIZES[size]
        self.method, self.K = method, lower_iters
        self.W, self.b = jt.zeros((features, classes)), jt.zeros((classes,))
        self.x = jt.full((features,), P.INIT_LOG_STRENGTH)
        self.m, self.v, self.t = jt.zeros_like(self.x), jt.zeros_like(self.x), 0

    def f(self, W, b, x, data):
        logits = jt.matmul(data["x"], W) + b
        return (jt.nn.cross_entropy_loss(logits, data["y"])
                + 0.5 * (jt.exp(x).reshape(-1, 1) * W * W).sum())

    @staticmethod
    def F(W, b, data):
        return jt.nn.cross_entropy_loss(jt.matmul(data["x"], W) + b, data["y"])

    def run_iter(self, train, val):
        x, K, lr = self.x, self.K, P.LL_LR
        W, b = self.W, self.b
        if self.method == "RAD":                    # unrolled, differentiable steps
            for _ in range(K):
                gW, gb = jt.grad(self.f(W, b, x, train), [W, b])
                W, b = W - lr * gW, b - lr * gb
            hyper = jt.grad(self.F(W, b, val), x)
        else:                                       # detached steps: no trajectory
            for _ in range(K):
                gW, gb = jt.grad(self.f(W, b, x, train), [W, b])
                W, b = (W - lr * gW).detach(), (b - lr * gb).detach()
            hyper = getattr(self, "_" + self.method.lower())(W, b, x, train, val)
        self._adam(hyper.detach())
        self.W, self.b = W.detach(), b.detach()     # warm start (copy_last_param)
        return hyper

    def _implicit(self, W, b, x, train, val, solve):
        b_vec = [g.detach() for g in jt.grad(self.F(W, b, val), [W, b])]
        gf = jt.grad(self.f(W, b, x, train), [W, b])

        def matvec(u):
            return [h.detach() * P.LL_LR for h in jt.grad(_dot(gf, u), [W, b])]

        v = solve(matvec, b_vec)
        return jt.grad(_dot(gf, v), x) * (-P.LL_LR)

    def _cg(self, W, b, x, train, val):
        def solve(matvec, rhs):
            sol = [jt.zeros_like(r) for r in rhs]
            r, p = list(rhs), list(rhs)
            rr = _dot(r, r)
            for _ in range(P.CG_K):
                Ap = matvec(p)
                alpha = rr / _dot(p, Ap)
                sol = [si + pi * alpha for si, pi in zip(sol, p)]
                r = [ri - ai * alpha for ri, ai in zip(r, Ap)]
                rr_new = _dot(r, r)
                p = [ri + pi * (rr_new / rr) for ri, pi in zip(r, p)]
                rr = rr_new
            return sol
        return self._implicit(W, b, x, train, val, solve)

    def _ns(self, W, b, x, train, val):
        def solve(matvec, rhs):
            term, total = list(rhs), list(rhs)
            for _ in range(P.CG_K):
                term = [t - a for t, a in zip(term, matvec(term))]
                total = [s + t for s, t in zip(total, term)]
            return total
        return self._implicit(W, b, x, train, val, solve)

    def _fd(self, W, b, x, train, val):
        v = [g.detach() for g in jt.grad(self.F(W, b, val), [W, b])]
        eps = P.FD_R / jt.sqrt(_dot(v, v))
        w = [self.W, self.b]                         # where the inner loop started

        def grad_x(sign):
            Wp, bp = [wi + vi * (sign * eps) for wi, vi in zip(w, v)]
            return jt.grad(self.f(Wp, bp, x, train), x)

        return (grad_x(1.0) - grad_x(-1.0)) / (2.0 * eps) * (-P.LL_LR)

    def _iga(self, W, b, x, train, val):
        gF = jt.grad(self.F(W, b, val), [W, b])
        gW, gb, gx = jt.grad(self.f(W, b, x, train), [W, b, x])
        lam = (_dot(gF, [gW, gb]) / _dot([gW, gb], [gW, gb])).detach()
        return gx * (-lam)

    def _adam(self, g, beta1=0.9, beta2=0.999, eps=1e-8):
        """Jittor's Adam rule, by hand."""
        self.t += 1
        self.m = (self.m * beta1 + g * (1 - beta1)).detach()
        self.v = (self.v * beta2 + g * g * (1 - beta2)).detach()
        step = P.UL_LR * np.sqrt(1 - beta2 ** self.t) / (1 - beta1 ** self.t)
        self.x = (self.x - step * self.m / (jt.sqrt(self.v) + eps)).detach()
