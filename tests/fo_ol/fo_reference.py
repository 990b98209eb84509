"""float64 references for the first-order operators on the quadratic problem.

Every step function writes out the update equations (docs/operators.md, "First-order methods") for
``f(x,y) = ½yᵀAy − yᵀBx + c`` and ``F(x,y) = ½||Cy − t||² + ½μ||x||²`` (tests/quadratic.py;
``c`` = the feed's ``offset``), with the LL optimiser plain SGD of step ``s``.
The fixed-point helpers give the points the operators provably converge to.
"""

import os

import numpy as np

import jboat  # environment defaults before Jittor
import jittor as jt

from quadratic import Quadratic, lower_loss, upper_loss


# -- problem variants ---------------------------------------------------------------------
def shifted_lower_loss(feed, upper_model, lower_model, **kwargs):
    """``f + offset``: same minimisers, but positive values (VSO's barrier needs V > 0)."""
    return lower_loss(feed, upper_model, lower_model, **kwargs) + feed["offset"]


LOSSES = {"lower_level_loss": shifted_lower_loss, "upper_level_loss": upper_loss}


def feeds(q, offset=0.0, t=None, scale=1.0):
    """LL and UL feed dicts; ``t``/``scale`` give other tasks (UL target, LL scale)."""
    ll = {"A": jt.array((q.A * scale).astype(np.float32)), "B": jt.array(q.B.astype(np.float32)),
          "offset": float(offset)}
    ul = q.ul_feed()
    if t is not None:
        ul["t"] = jt.array(np.asarray(t, np.float32))
    return ll, ul


def square_quadratic(**kwargs):
    """x and y of the same shape (n = m = 4, full-rank C): what GAFFO requires."""
    kwargs.setdefault("seed", 3)
    return Quadratic(n=4, m=4, p=4, **kwargs)


RECIPES = {"VSO": "bvfim_vso", "VFO": "bome_vfo", "MESO": "meha_meso", "PGDO": "vpbgd_pgdo",
           "ALTO": "alto", "GAFFO": "gaffo"}
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_recipe(fo_op):
    """The shipped recipe configs/<name>.yaml of ``fo_op`` (a dict)."""
    config = jboat.load_config(os.path.join(_ROOT, "configs", RECIPES[fo_op] + ".yaml"))
    assert config["fo_op"] == fo_op
    return config


def build(q, fo_op, lower_iters=5, **options):
    options.setdefault("track_losses", False)
    return q.build(None, None, fo_op=fo_op, lower_iters=lower_iters, losses=LOSSES, **options)


class QuadraticMaths:
    """Derivatives of the quadratic problem in float64."""

    def __init__(self, q, offset=0.0):
        self.A, self.B, self.C, self.t, self.mu = q.A, q.B, q.C, q.t, q.mu
        self.offset = offset

    def f(self, x, y):
        return 0.5 * y @ self.A @ y - y @ self.B @ x + self.offset

    def fy(self, x, y):
        return self.A @ y - self.B @ x

    def fx(self, x, y):
        return -self.B.T @ y

    def F(self, x, y):
        r = self.C @ y - self.t
        return 0.5 * r @ r + 0.5 * self.mu * x @ x

    def Fy(self, x, y):
        return self.C.T @ (self.C @ y - self.t)

    def Fx(self, x, y):
        return self.mu * x


# -- one step of each operator (docs/operators.md, "First-order methods") ------------------------------------------
def vso_step(m, x, z, k, K, s, o):
    """Returns (z_new, x-gradient, F(x,y))."""
    d = o["reg_decay"] * k + 1.0
    mu_z, mu_y, mu_b = o["ll_l2_reg"] / d, o["ul_l2_reg"] / d, o["ul_ln_reg"] / d
    for _ in range(o["z_loop"]):
        z = z - s * (m.fy(x, z) + 2 * mu_z * z)
    V = m.f(x, z) + mu_z * z @ z
    y = z.copy()
    for _ in range(K):
        y = y - o["z_lr"] * (m.Fy(x, y) + 2 * mu_y * y + mu_b * m.fy(x, y) / V)
    gx = m.Fx(x, y) - mu_b * (m.fx(x, z) - m.fx(x, y)) / V
    return z, gx, m.F(x, y)


def vfo_step(m, x, y, K, s, o):
    """Returns (y_new, x-gradient, F(x,y), λ)."""
    y_hat = y.copy()
    for _ in range(K):
        y_hat = y_hat - o["y_hat_lr"] * m.fy(x, y_hat)
    q = m.f(x, y) - m.f(x, y_hat)
    gF = np.concatenate([m.Fy(x, y), m.Fx(x, y)])
    gq = np.concatenate([m.fy(x, y), m.fx(x, y) - m.fx(x, y_hat)])
    lam = max(0.0, (o["u1"] * q - gF @ gq) / (gq @ gq + 1e-8))
    d = gF + lam * gq
    n = y.size
    return y - s * d[:n], d[n:], m.F(x, y), lam


def meso_step(m, x, y, theta, k, s, o):
    """Returns (y_new, theta_new, x-gradient, value of the x-objective)."""
    c = o["c0"] * (k + 1) ** 0.25
    gamma = o["gamma_1"]
    theta = theta - o["eta"] * (m.fy(x, theta) + gamma * (theta - y))
    y = y - s * (m.Fy(x, y) / c + m.fy(x, y) - gamma * (y - theta))
    gx = m.Fx(x, y) / c + m.fx(x, y) - m.fx(x, theta)
    value = m.F(x, y) / c + m.f(x, y) - m.f(x, theta)
    return y, theta, gx, value


def pgdo_step(m, x, y, y_hat, gamma, K, s, o):
    """Returns (y_new, y_hat_new, gamma_new, x-gradient, F(x,y))."""
    gamma_max = max(o["gamma_max"], o["gamma_init"])
    delta = (gamma_max - o["gamma_init"]) / o["gamma_argmax_step"]
    omega = min(1.0 / (gamma + 1e-8), 1.0)
    if o["update_y_ahead"]:
        for _ in range(K):
            y = y - s * m.fy(x, y)
    for _ in range(K):
        y_hat = y_hat - o["y_hat_lr"] * m.fy(x, y_hat)
    if o["penalty"] == "difference":
        gy = omega * (m.Fy(x, y) + gamma * m.fy(x, y))
        gx = omega * (m.Fx(x, y) + gamma * (m.fx(x, y) - m.fx(x, y_hat)))
    else:  # ||∇_y f||² = ||Ay − Bx||²: second-order terms 2Aᵀr and −2Bᵀr
        r = m.fy(x, y)
        gy = omega * (m.Fy(x, y) + gamma * 2 * m.A.T @ r)
        gx = omega * (m.Fx(x, y) - gamma * 2 * m.B.T @ r)
    return y - s * gy, y_hat, min(gamma + delta, gamma_max), gx, m.F(x, y)


def alto_step(m, x, y, s):
    """Returns (y_new, x-gradient, F(x, y_new))."""
    y = y - s * m.fy(x, y)
    return y, m.Fx(x, y), m.F(x, y)


def gaffo_step(m, x, y, s_l, o):
    """Returns (y_new, UL-buffer direction, F(x, y_new)); no projection."""
    if o["sync_lower_from_upper"]:
        y = x.copy()
    g = m.fy(x, y)
    y = y - s_l * (np.sign(g) if o["use_sign_lower_step"] else g)
    b = m.fy(x, y)
    p = m.fy(x, y + o["sigma"] * b)
    a = m.Fy(x, y) / max(o["lambda"], 1e-8) - (p - b)
    return y, (-a if o["maximize"] else a), m.F(x, y)


# -- fixed points -------------------------------------------------------------------------
def penalty_point(q, gamma, penalty="difference"):
    """Minimiser of ``F(x,y) + γ·p(x,y)`` over (x, y), where ``p = f(x,y) − min f(x,·)
    = ½(y − Px)ᵀA(y − Px)`` ("difference") or ``||Ay − Bx||²`` ("gradient")."""
    n, m_ = q.B.shape[1], q.B.shape[0]
    P = np.linalg.solve(q.A, q.B)
    W = gamma * q.A if penalty == "difference" else 2 * gamma * q.A.T @ q.A
    L = np.hstack([-P, np.eye(m_)])                   # y − Px = L (x, y)
    H = L.T @ W @ L
    H[:n, :n] += q.mu * np.eye(n)
    H[n:, n:] += q.C.T @ q.C
    b = np.concatenate([np.zeros(n), q.C.T @ q.t])
    return np.linalg.solve(H, b)[:n]


def vso_fixed_point(q, o, K, offset, iters=200):
    """x̄ with zero VSO x-gradient when z = argmin f + μ_z||z||² (the z-loop's fixed
    point) and ``reg_decay = 0``. The y-loop is affine for fixed ``ρ = μ_b/V``; ``V``
    depends on x, so solve for x at fixed ρ and iterate on ρ."""
    assert o["reg_decay"] == 0.0
    A, B, C, t, mu = q.A, q.B, q.C, q.t, q.mu
    n, m_ = B.shape[1], B.shape[0]
    mu_z, mu_y, mu_b, h = o["ll_l2_reg"], o["ul_l2_reg"], o["ul_ln_reg"], o["z_lr"]
    Z = np.linalg.solve(A + 2 * mu_z * np.eye(m_), B)          # z = Z x
    rho = mu_b / offset
    for _ in range(iters):
        T = np.eye(m_) - h * (C.T @ C + 2 * mu_y * np.eye(m_) + rho * A)
        # y_K = T^K z + Σ_j T^j h (Cᵀt + ρBx) = Yx x + yc
        S = sum(np.linalg.matrix_power(T, j) for j in range(K)) * h
        Yx = np.linalg.matrix_power(T, K) @ Z + S @ (rho * B)
        yc = S @ (C.T @ t)
        # gx = μx + ρBᵀ(z − y_K) = 0
        M = mu * np.eye(n) + rho * B.T @ (Z - Yx)
        x = np.linalg.solve(M, rho * B.T @ yc)
        z = Z @ x
        V = 0.5 * z @ A @ z - z @ B @ x + offset + mu_z * z @ z
        rho_new = mu_b / V
        if abs(rho_new - rho) < 1e-13 * rho:
            break
        rho = rho_new
    return x


def gaffo_fixed_point(q, o, s_l):
    """Zero of GAFFO's direction with sync (y = Sx, S = I − s_l(A − B)):
    ``a(x) = Cᵀ(CSx − t)/λ − σA(ASx − Bx) = 0`` (linear)."""
    A, B, C, t = q.A, q.B, q.C, q.t
    S = np.eye(A.shape[0]) - s_l * (A - B)
    G = C.T @ C @ S / o["lambda"] - o["sigma"] * A @ (A @ S - B)
    return np.linalg.solve(G, C.T @ t / o["lambda"]), G
