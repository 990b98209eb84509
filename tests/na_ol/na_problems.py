"""Small bilevel problems with float64 oracles for the NA-operator tests.

* :class:`MetaRegression` — meta-learning with the UL model equal to the LL model:
  task ``i`` has LL loss ``f_i(w) = ½ wᵀA_i w - b_iᵀw`` (a least-squares fit,
  ``A_i = X_iᵀX_i/n``) and UL loss ``F_i(w) = ½/n ‖Q_i w - z_i‖²`` on a query set.
  With SGD (lr s), ``y_K = M_i^K θ + …`` with ``M_i = I - sA_i``, so the MAML
  meta-gradient is ``Σ_i (M_i^K)ᵀ ∇F_i(y_K^i)``.
* :class:`Logistic`, :class:`MetaLogistic` — non-quadratic problems: logistic regression whose
  per-feature L2 weights ``exp(x)`` are the UL variables; UL loss = validation
  logistic loss + ½ μ‖x‖². Oracles (unrolled loss, LL solution by Newton) in
  float64 for finite-difference checks.

Shapes follow tests/quadratic.py (parameters of size 4, UL variables of size 3 or 4)
so Jittor's compiled kernels are shared.
"""

import jittor as jt
import numpy as np

import jboat
from quadratic import Vector


# -- meta-learning: UL model is the LL model ---------------------------------------------
def meta_lower_loss(feed, upper_model, lower_model, **kwargs):
    w = lower_model(**kwargs)
    return 0.5 * (w * jt.matmul(feed["A"], w)).sum() - (feed["b"] * w).sum()


def meta_upper_loss(feed, upper_model, lower_model, **kwargs):
    w = lower_model(**kwargs)
    r = jt.matmul(feed["Q"], w) - feed["z"]
    return 0.5 * (r * r).sum() / feed["Q"].shape[0]


def meta_gda_loss(ll_feed, ul_feed, upper_model, lower_model, **kwargs):
    alpha = ll_feed["alpha"]
    return (alpha * meta_upper_loss(ul_feed, upper_model, lower_model, **kwargs)
            + (1 - alpha) * meta_lower_loss(ll_feed, upper_model, lower_model, **kwargs))


class MetaRegression:
    """A few least-squares tasks sharing the initialisation ``θ`` (= the model)."""

    def __init__(self, tasks=2, m=4, n=5, seed=3, lr=0.1):
        rng = np.random.RandomState(seed)
        self.tasks = []
        for _ in range(tasks):
            X = rng.randn(n, m)
            Q = rng.randn(n, m)
            w_true = rng.randn(m)
            self.tasks.append({"A": X.T @ X / n + 0.5 * np.eye(m), "b": X.T @ (X @ w_true) / n,
                               "Q": Q, "z": Q @ w_true + 0.1 * rng.randn(n)})
        self.theta = rng.randn(m) * 0.5
        self.lr, self.m = lr, m

    def feeds(self):
        def f32(a):
            return jt.array(np.asarray(a, dtype=np.float32))
        ll = [{"A": f32(t["A"]), "b": f32(t["b"])} for t in self.tasks]
        ul = [{"Q": f32(t["Q"]), "z": f32(t["z"])} for t in self.tasks]
        return ll, ul

    def build(self, gm_op=("NGD",), na_op=("IAD",), lower_iters=3, proximal=0.0,
              **options):
        """``proximal``: iMAML's ``(λ/2)‖y − θ‖²`` added to each task's LL loss."""
        self.model = Vector(self.theta)
        params = list(self.model.parameters())
        config = {"gm_op": list(gm_op), "na_op": list(na_op), "lower_iters": lower_iters,
                  "accumulate_grad": True, "return_grad": True,
                  "lower_level_model": self.model, "upper_level_model": self.model,
                  "lower_level_var": params, "upper_level_var": params,
                  "lower_level_opt": jt.optim.SGD(params, lr=self.lr),
                  "upper_level_opt": jt.optim.SGD(params, lr=0.1)}
        config.update(options)
        lower = meta_lower_loss
        if proximal:
            def lower(feed, upper_model, lower_model, **kwargs):
                w = lower_model(**kwargs)
                d = w - upper_model.value
                return meta_lower_loss(feed, upper_model, lower_model, **kwargs) + (
                    d * d * (0.5 * proximal)).sum()
        losses = {"lower_level_loss": lower, "upper_level_loss": meta_upper_loss,
                  "gda_loss": meta_gda_loss}
        return jboat.Problem(config, losses).build_ll_solver().build_ul_solver()

    # -- oracles (float64) ---------------------------------------------------------------
    def M(self, task):
        return np.eye(self.m) - self.lr * task["A"]

    def final_iterate(self, task, K):
        y = self.theta.copy()
        for _ in range(K):
            y = y - self.lr * (task["A"] @ y - task["b"])
        return y

    def upper_grad(self, task, y):
        Q = task["Q"]
        return Q.T @ (Q @ y - task["z"]) / Q.shape[0]

    def imaml_gradient(self, K, lam):
        """``Σ_i λ(A_i + λI)⁻¹∇F_i(y_K^i)``, ``y_K^i`` from ``K`` SGD steps on the
        proximal LL loss ``f_i + (λ/2)‖y − θ‖²`` started at ``θ``."""
        total = np.zeros(self.m)
        for task in self.tasks:
            y = self.theta.copy()
            for _ in range(K):
                y = y - self.lr * (task["A"] @ y - task["b"] + lam * (y - self.theta))
            H = task["A"] + lam * np.eye(self.m)
            total += lam * np.linalg.solve(H, self.upper_grad(task, y))
        return total

    def meta_gradient(self, K, first_order=False, inner=None):
        """``Σ_i (M_i^K)ᵀ G_i`` with ``G_i = inner(task, ∇F_i(y_K))`` (default ∇F_i)."""
        total = np.zeros(self.m)
        for task in self.tasks:
            g = self.upper_grad(task, self.final_iterate(task, K))
            if inner is not None:
                g = inner(task, g)
            J = np.eye(self.m) if first_order else np.linalg.matrix_power(self.M(task), K)
            total += J.T @ g
        return total


# -- a non-quadratic problem ---------------------------------------------------------------
def _softplus(v):
    # ``Var + 1.0``, not ``1.0 + Var``: the reflected form demotes one-element float64
    # Vars to float32 (tools/jittor_float64_repro.py, case B)
    return jt.maximum(v, 0.0) + jt.log(jt.exp(-jt.abs(v)) + 1.0)


def logistic_tasks(rng, tasks, n, m):
    """``tasks`` logistic-regression tasks (train ``X, z`` and query ``Xq, zq``, labels
    ±1 of a random linear rule with noise) drawn from ``rng``."""
    out = []
    for _ in range(tasks):
        w_true = rng.randn(m)
        X, Xq = rng.randn(n, m), rng.randn(n, m)
        out.append({"X": X, "z": np.sign(X @ w_true + 0.3 * rng.randn(n)),
                    "Xq": Xq, "zq": np.sign(Xq @ w_true + 0.3 * rng.randn(n))})
    return out


def logistic_lower_loss(feed, upper_model, lower_model, **kwargs):
    w = lower_model(**kwargs)
    x = upper_model()
    margins = -feed["z"] * jt.matmul(feed["X"], w)
    return _softplus(margins).mean() + 0.5 * (jt.exp(x) * w * w).sum()


def logistic_upper_loss(feed, upper_model, lower_model, **kwargs):
    w = lower_model(**kwargs)
    x = upper_model()
    margins = -feed["z"] * jt.matmul(feed["X"], w)
    return _softplus(margins).mean() + 0.5 * feed["mu"] * (x * x).sum()


def _np_softplus(v):
    return np.maximum(v, 0.0) + np.log1p(np.exp(-np.abs(v)))


def _np_sigmoid(v):
    return 0.5 * (1.0 + np.tanh(0.5 * v))


class Logistic:
    """Logistic regression (4 weights) with learned per-feature L2 weights exp(x)."""

    def __init__(self, n=8, m=4, seed=5, lr=1.0, mu=0.05):
        rng = np.random.RandomState(seed)
        w_true = rng.randn(m)
        self.X = rng.randn(n, m)
        self.z = np.sign(self.X @ w_true + 0.3 * rng.randn(n))
        self.Xv = rng.randn(n, m)
        self.zv = np.sign(self.Xv @ w_true + 0.3 * rng.randn(n))
        self.x0 = 0.3 * rng.randn(m) - 1.0
        self.y0 = 0.5 * rng.randn(m)
        self.lr, self.mu, self.m = lr, mu, m

    def ll_feed(self):
        return {"X": jt.array(self.X.astype(np.float32)), "z": jt.array(self.z.astype(np.float32))}

    def ul_feed(self):
        return {"X": jt.array(self.Xv.astype(np.float32)),
                "z": jt.array(self.zv.astype(np.float32)), "mu": self.mu}

    def build(self, gm_op=("NGD",), na_op=("RAD",), lower_iters=5, **options):
        self.upper = Vector(self.x0)
        self.lower = Vector(self.y0)
        config = {"gm_op": list(gm_op), "na_op": list(na_op), "lower_iters": lower_iters,
                  "return_grad": True, "copy_last_param": False,
                  "lower_level_model": self.lower, "upper_level_model": self.upper,
                  "lower_level_var": list(self.lower.parameters()),
                  "upper_level_var": list(self.upper.parameters()),
                  "lower_level_opt": jt.optim.SGD(list(self.lower.parameters()), lr=self.lr),
                  "upper_level_opt": jt.optim.SGD(list(self.upper.parameters()), lr=0.1)}
        config.update(options)
        losses = {"lower_level_loss": logistic_lower_loss,
                  "upper_level_loss": logistic_upper_loss}
        return jboat.Problem(config, losses).build_ll_solver().build_ul_solver()

    # -- float64 oracles -----------------------------------------------------------------
    def lower_grad(self, x, w):
        s = _np_sigmoid(-self.z * (self.X @ w))
        return -self.X.T @ (self.z * s) / len(self.z) + np.exp(x) * w

    def lower_hessian(self, x, w):
        s = _np_sigmoid(-self.z * (self.X @ w))
        weights = s * (1 - s) / len(self.z)
        return self.X.T @ (weights[:, None] * self.X) + np.diag(np.exp(x))

    def F(self, x, w):
        return (_np_softplus(-self.zv * (self.Xv @ w)).mean() + 0.5 * self.mu * x @ x)

    def unrolled_loss(self, x, K):
        w = self.y0.copy()
        for _ in range(K):
            w = w - self.lr * self.lower_grad(x, w)
        return self.F(x, w)

    def lower_solution(self, x):
        w = self.y0.copy()
        for _ in range(50):
            w = w - np.linalg.solve(self.lower_hessian(x, w), self.lower_grad(x, w))
        return w

    def optimal_loss(self, x):
        return self.F(x, self.lower_solution(x))


def meta_logistic_lower_loss(feed, upper_model, lower_model, **kwargs):
    w = lower_model(**kwargs)
    margins = -feed["z"] * jt.matmul(feed["X"], w)
    return _softplus(margins).mean() + 0.5 * feed["lam"] * (w * w).sum()


def meta_logistic_upper_loss(feed, upper_model, lower_model, **kwargs):
    w = lower_model(**kwargs)
    return _softplus(-feed["z"] * jt.matmul(feed["X"], w)).mean()


class MetaLogistic:
    """Meta-learning the initialisation θ of per-task logistic regressions (UL model
    = LL model): task loss after K SGD steps, non-quadratic in θ."""

    def __init__(self, tasks=2, n=8, m=4, seed=7, lr=1.0, lam=0.3):
        rng = np.random.RandomState(seed)
        self.tasks = logistic_tasks(rng, tasks, n, m)
        self.theta = 0.5 * rng.randn(m)
        self.lr, self.lam = lr, lam

    def feeds(self):
        def f32(a):
            return jt.array(np.asarray(a, dtype=np.float32))
        ll = [{"X": f32(t["X"]), "z": f32(t["z"]), "lam": self.lam} for t in self.tasks]
        ul = [{"X": f32(t["Xq"]), "z": f32(t["zq"])} for t in self.tasks]
        return ll, ul

    def build(self, na_op=("IAD",), lower_iters=3, **options):
        self.model = Vector(self.theta)
        params = list(self.model.parameters())
        config = {"gm_op": ["NGD"], "na_op": list(na_op), "lower_iters": lower_iters,
                  "accumulate_grad": True, "return_grad": True,
                  "lower_level_model": self.model, "upper_level_model": self.model,
                  "lower_level_var": params, "upper_level_var": params,
                  "lower_level_opt": jt.optim.SGD(params, lr=self.lr),
                  "upper_level_opt": jt.optim.SGD(params, lr=0.1)}
        config.update(options)
        losses = {"lower_level_loss": meta_logistic_lower_loss,
                  "upper_level_loss": meta_logistic_upper_loss}
        return jboat.Problem(config, losses).build_ll_solver().build_ul_solver()

    def meta_loss(self, theta, K):
        """Σ_i F_i(y_K^i(θ)) in float64."""
        total = 0.0
        for t in self.tasks:
            y = np.asarray(theta, float).copy()
            for _ in range(K):
                s = _np_sigmoid(-t["z"] * (t["X"] @ y))
                y = y - self.lr * (-t["X"].T @ (t["z"] * s) / len(t["z"]) + self.lam * y)
            total += _np_softplus(-t["zq"] * (t["Xq"] @ y)).mean()
        return total


def central_difference(func, x, eps=1e-5):
    """Gradient of ``func`` at ``x`` by central differences (float64)."""
    x = np.asarray(x, float)
    grad = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        grad[i] = (func(x + e) - func(x - e)) / (2 * eps)
    return grad


# -- the quadratic problem under GDA (float64) -----------------------------------------------
def gda_trajectory(q, x, y0, K, alpha_init, alpha_decay):
    """Iterates ``y_t`` and Jacobians ``dy_t/dx`` of SGD on the aggregated objective
    ``h_t = α_t F + (1 - α_t) f`` of the quadratic problem, ``α_t = α_0 d^t``.

    ``∇_y h_t = H_t y - α_t Cᵀt - (1 - α_t) B x`` with ``H_t = α_t CᵀC + (1 - α_t) A``.
    """
    ys, Js = [np.asarray(y0, float)], [np.zeros((q.m, q.n))]
    for k in range(K):
        a = alpha_init * alpha_decay ** k
        H = a * q.C.T @ q.C + (1 - a) * q.A
        grad = H @ ys[-1] - a * q.C.T @ q.t - (1 - a) * q.B @ x
        ys.append(ys[-1] - q.lr * grad)
        Js.append((np.eye(q.m) - q.lr * H) @ Js[-1] + q.lr * (1 - a) * q.B)
    return ys, Js


def gda_hessian(q, alpha):
    """``∇²_yy h`` of the aggregated quadratic objective at weight ``alpha``."""
    return alpha * q.C.T @ q.C + (1 - alpha) * q.A
