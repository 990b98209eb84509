"""A closed-form quadratic bilevel problem used as an oracle by the tests.

LL: f(x, y) = ½ yᵀAy − yᵀBx;  UL: F(x, y) = ½‖Cy − t‖² + ½ μ‖x‖².
With SGD (lr s) the LL iteration is linear, y_{t+1} = M y_t + sBx with M = I − sA,
so every hyper-gradient has a closed form computed here in float64.
"""

import jittor as jt
import numpy as np

import jboat


class Vector(jt.Module):
    """A module whose only parameter is a vector; calling it returns the vector."""

    def __init__(self, values):
        self.value = jt.array(np.asarray(values, dtype=np.float32))

    def execute(self):
        return self.value


def lower_loss(feed, upper_model, lower_model, **kwargs):
    y = lower_model(**kwargs)
    x = upper_model()
    return 0.5 * (y * jt.matmul(feed["A"], y)).sum() - (y * jt.matmul(feed["B"], x)).sum()


def upper_loss(feed, upper_model, lower_model, **kwargs):
    y = lower_model(**kwargs)
    x = upper_model()
    r = jt.matmul(feed["C"], y) - feed["t"]
    return 0.5 * (r * r).sum() + 0.5 * feed["mu"] * (x * x).sum()


def gda_loss(ll_feed, ul_feed, upper_model, lower_model, **kwargs):
    alpha = ll_feed["alpha"]
    return (alpha * upper_loss(ul_feed, upper_model, lower_model, **kwargs)
            + (1 - alpha) * lower_loss(ll_feed, upper_model, lower_model, **kwargs))


class Quadratic:
    """Data, float64 oracles and a Problem factory for the quadratic bilevel problem."""

    def __init__(self, n=3, m=4, p=2, seed=0, lr=0.1, mu=0.1):
        rng = np.random.RandomState(seed)
        Q = rng.randn(m, m)
        self.A = Q @ Q.T / m + np.eye(m)             # well conditioned, SPD
        self.B = rng.randn(m, n) * 0.5
        self.C = rng.randn(p, m)
        self.t = rng.randn(p)
        self.mu, self.lr = mu, lr
        self.x0 = rng.randn(n) * 0.5
        self.y0 = rng.randn(m) * 0.5
        self.n, self.m = n, m

    # -- feeds ---------------------------------------------------------------------------
    def ll_feed(self):
        return {"A": jt.array(self.A.astype(np.float32)), "B": jt.array(self.B.astype(np.float32))}

    def ul_feed(self):
        return {"C": jt.array(self.C.astype(np.float32)), "t": jt.array(self.t.astype(np.float32)),
                "mu": self.mu}

    # -- problem -----------------------------------------------------------------------------
    def build(self, gm_op=("NGD",), na_op=("RAD",), lower_iters=5, ul_opt=None, ll_opt=None,
              x0=None, y0=None, losses=None, **options):
        self.upper = Vector(self.x0 if x0 is None else x0)
        self.lower = Vector(self.y0 if y0 is None else y0)
        ll_opt = ll_opt or (lambda ps: jt.optim.SGD(ps, lr=self.lr))
        ul_opt = ul_opt or (lambda ps: jt.optim.SGD(ps, lr=0.1))
        config = {"gm_op": list(gm_op) if gm_op else None,
                  "na_op": list(na_op) if na_op else None,
                  "lower_iters": lower_iters,
                  "lower_level_model": self.lower, "upper_level_model": self.upper,
                  "lower_level_var": list(self.lower.parameters()),
                  "upper_level_var": list(self.upper.parameters()),
                  "lower_level_opt": ll_opt(list(self.lower.parameters())),
                  "upper_level_opt": ul_opt(list(self.upper.parameters()))}
        config.update(options)
        loss_config = losses or {"lower_level_loss": lower_loss, "upper_level_loss": upper_loss,
                                 "gda_loss": gda_loss}
        problem = jboat.Problem(config, loss_config)
        return problem.build_ll_solver().build_ul_solver()

    # -- oracles (float64) ----------------------------------------------------------------------
    def M(self):
        return np.eye(self.m) - self.lr * self.A

    def trajectory(self, x, y0, K):
        ys = [np.asarray(y0, float)]
        for _ in range(K):
            ys.append(self.M() @ ys[-1] + self.lr * self.B @ x)
        return ys

    def dydx(self, K, start=0):
        """d y_K / d x when back-propagation covers steps start..K-1."""
        M = self.M()
        J = np.zeros((self.m, self.n))
        for j in range(K - start):
            J += np.linalg.matrix_power(M, j) @ (self.lr * self.B)
        return J

    def dF_dy(self, y):
        return self.C.T @ (self.C @ y - self.t)

    def f(self, x, y):
        return 0.5 * y @ self.A @ y - y @ self.B @ x

    def F(self, x, y):
        r = self.C @ y - self.t
        return 0.5 * r @ r + 0.5 * self.mu * x @ x

    def unrolled_hypergradient(self, x, y0, K, start=0, select=None):
        """dF(x, y_sel)/dx with y_sel = y_select (default y_K), truncated at ``start``."""
        ys = self.trajectory(x, y0, K)
        k = K if select is None else select
        return self.dydx(k, start).T @ self.dF_dy(ys[k]) + self.mu * x

    def implicit_hypergradient(self, x, y):
        """μx + Bᵀ A⁻¹ Cᵀ(Cy − t): the exact implicit hyper-gradient at y."""
        return self.mu * x + self.B.T @ np.linalg.solve(self.A, self.dF_dy(y))

    def optimum(self):
        """x* of min_x F(x, y*(x)) with y*(x) = A⁻¹Bx."""
        P = np.linalg.solve(self.A, self.B)          # y* = P x
        H = P.T @ self.C.T @ self.C @ P + self.mu * np.eye(self.n)
        return np.linalg.solve(H, P.T @ self.C.T @ self.t)


def upper_adam_state(problem):
    """Copies of every tracked variable, and the UL Adam optimizer's step count,
    first moments and second moments (for "state untouched" checks)."""
    opt = problem.boat_configs["upper_level_opt"]
    return ([p.numpy().copy() for p in problem._tracked_vars()], opt.n_step,
            [m.numpy().copy() for m in opt.param_groups[0]["m"]],
            [v.numpy().copy() for v in opt.param_groups[0]["values"]])


def adam_first_step(x, g, lr, betas, eps):
    """``x`` after the first step of Jittor's Adam on gradient ``g`` (bias-corrected)."""
    g = np.asarray(g, float)
    m, v = (1 - betas[0]) * g, (1 - betas[1]) * g * g
    step = lr * np.sqrt(1 - betas[1]) / (1 - betas[0])
    return np.asarray(x, float) - step * m / (np.sqrt(v) + eps)


def rel_err(a, b):
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)


# -- oracles for the GM operators (GDA, DI) ------------------------------------------------------
def gda_alphas(K, alpha_init, alpha_decay):
    """α_k = alpha_init · alpha_decay^k for the LL steps k = 0..K-1 of one UL iteration."""
    return [alpha_init * alpha_decay ** k for k in range(K)]


def gda_trajectory(q, x, y0, K, alpha_init, alpha_decay):
    """LL iterates of steps along ∇_y[α_k F + (1 − α_k) f] (float64):
    y_{k+1} = M_k y_k + c_k(x), M_k = I − s(α_k CᵀC + (1 − α_k)A),
    c_k = s(α_k Cᵀt + (1 − α_k)Bx)."""
    ys = [np.asarray(y0, float)]
    eye = np.eye(q.m)
    for a in gda_alphas(K, alpha_init, alpha_decay):
        M = eye - q.lr * (a * q.C.T @ q.C + (1 - a) * q.A)
        ys.append(M @ ys[-1] + q.lr * (a * q.C.T @ q.t + (1 - a) * q.B @ np.asarray(x, float)))
    return ys


def gda_dydx(q, K, alpha_init, alpha_decay):
    """d y_K / d x of the aggregated iteration: J_{k+1} = M_k J_k + s(1 − α_k)B, J_0 = 0
    (the μ‖x‖² term of F has no y-gradient, so only the f-part of c_k depends on x)."""
    eye = np.eye(q.m)
    J = np.zeros((q.m, q.n))
    for a in gda_alphas(K, alpha_init, alpha_decay):
        M = eye - q.lr * (a * q.C.T @ q.C + (1 - a) * q.A)
        J = M @ J + q.lr * (1 - a) * q.B
    return J


def gda_unrolled_hypergradient(q, x, y0, K, alpha_init, alpha_decay):
    """dF(x, y_K(x))/dx = μx + (dy_K/dx)ᵀ Cᵀ(C y_K − t) for the aggregated iteration."""
    y_K = gda_trajectory(q, x, y0, K, alpha_init, alpha_decay)[-1]
    return q.mu * np.asarray(x, float) + gda_dydx(q, K, alpha_init, alpha_decay).T @ q.dF_dy(y_K)


def initial_point_gradient(q, x, y0, K):
    """∂F(x, y_K)/∂y_0 = (M^K)ᵀ Cᵀ(C y_K − t) for plain SGD steps (the DI gradient)."""
    y_K = q.trajectory(x, y0, K)[-1]
    return np.linalg.matrix_power(q.M(), K).T @ q.dF_dy(y_K)
