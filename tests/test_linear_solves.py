"""cg_step and neumann_series: early-stop semantics without per-iteration host reads."""

import jittor as jt
import numpy as np
import pytest

import jboat.utils.op_utils as op_utils
from jboat.utils.op_utils import cg_step, neumann_series

rng = np.random.RandomState(3)
_Q = rng.randn(4, 4)
A64 = _Q @ _Q.T + 0.5 * np.eye(4)          # SPD, condition number ~ 20
B64 = rng.randn(4)
M64 = np.eye(4) - A64 / (1.2 * np.linalg.eigvalsh(A64).max())   # spectral radius < 1


def _split(v):
    """A 4-vector as a list of two Vars (list-structured, like (W, b))."""
    return [jt.array(v[:3].reshape(3, 1).astype(np.float32)), jt.array(v[3:].astype(np.float32))]


def _join(vs):
    return np.concatenate([np.asarray(v.numpy(), np.float64).reshape(-1) for v in vs])


def _linear_map(matrix):
    mat = jt.array(matrix.astype(np.float32))

    def apply(u):
        flat = jt.concat([u[0].reshape(-1), u[1].reshape(-1)])
        out = jt.matmul(mat, flat.reshape(4, 1)).reshape(-1)
        return [out[:3].reshape(3, 1), out[3:]]
    return apply


def reference_cg(A, b, max_iter, epsilon):
    """Textbook CG in float64 with the documented stopping rules (relative:
    ``||r|| <= epsilon ||b||``)."""
    x, r = np.zeros_like(b), b.copy()
    p, rr = r.copy(), r @ r
    bound = epsilon * np.linalg.norm(b) if epsilon > 0 else -1.0
    if np.sqrt(rr) <= bound:
        return x
    for _ in range(max_iter):
        Ap = A @ p
        pAp = p @ Ap
        if pAp == 0:
            break
        alpha = rr / pAp
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = r @ r
        if np.sqrt(rr_new) <= bound:
            break
        p, rr = r + (rr_new / rr) * p, rr_new
    return x


def reference_neumann(M, b, k, tol):
    term, total = b.copy(), b.copy()
    for _ in range(k):
        term = M @ term
        total = total + term
        if tol > 0 and np.linalg.norm(term) < tol:
            break
    return total


@pytest.fixture
def host_reads(monkeypatch):
    """Counts ``Var.item()`` calls (the solvers' only way to read a value on the host)."""
    calls = []
    original = jt.Var.item

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(jt.Var, "item", counting)
    return calls


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu-kernels", "jittor-ops"])
@pytest.mark.parametrize("max_iter, epsilon", [(2, 0.0), (3, 1e-10), (12, 1e-10), (12, 0.3),
                                               (12, 3.0), (25, 1e-3), (5, 1e9)])
def test_cg_matches_the_textbook_iteration(monkeypatch, kernels, max_iter, epsilon):
    monkeypatch.setattr(op_utils, "_scalar_kernels_enabled", lambda: kernels)
    x = _join(cg_step(_linear_map(A64), _split(B64), max_iter=max_iter, epsilon=epsilon))
    expected = reference_cg(A64, B64, max_iter, epsilon)
    scale = max(np.abs(expected).max(), 1e-3)
    assert np.abs(x - expected).max() / scale < 1e-4


def test_cg_early_stop_differs_from_running_on():
    # the test above can fail: stopping at the tolerance changes the answer
    stopped = reference_cg(A64, B64, 12, 0.3)
    assert np.abs(stopped - reference_cg(A64, B64, 12, 0.0)).max() > 1e-3


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu-kernels", "jittor-ops"])
@pytest.mark.parametrize("k, tol", [(0, 1e-10), (3, 0.0), (15, 1e-10), (15, 1.0), (15, 10.0)])
def test_neumann_matches_partial_sums(monkeypatch, kernels, k, tol):
    monkeypatch.setattr(op_utils, "_scalar_kernels_enabled", lambda: kernels)
    total = _join(neumann_series(_linear_map(M64), _split(B64), k, tol))
    expected = reference_neumann(M64, B64, k, tol)
    assert np.abs(total - expected).max() / np.abs(expected).max() < 1e-4
    if tol == 1.0:   # the stop fired and mattered
        assert np.abs(expected - reference_neumann(M64, B64, k, 0.0)).max() > 1e-3


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_cg_stops_early_on_a_well_conditioned_system_in_float32(scale):
    # 200 unknowns, eigenvalues in {1, 2, 3}: CG converges in 3 iterations; the
    # relative rule fires in float32 whatever the scale of b (an absolute 1e-4 would
    # never fire at scale 1e6 and fire at once at scale 1e-6)
    diag = np.tile([1.0, 2.0, 3.0], 67)[:200].astype(np.float32)
    b = (np.random.RandomState(0).randn(200) * scale).astype(np.float32)
    calls = []

    def matvec(u):
        calls.append(1)
        return [u[0] * jt.array(diag)]
    x = cg_step(matvec, [jt.array(b)], max_iter=50, epsilon=1e-4, check_every=1)
    assert x[0].dtype == jt.float32
    assert len(calls) <= 5, len(calls)
    np.testing.assert_allclose(x[0].numpy() * diag, b, rtol=1e-3, atol=1e-3 * scale)
    # tolerance 0 runs every iteration
    calls.clear()
    cg_step(matvec, [jt.array(b)], max_iter=8, epsilon=0.0, check_every=1)
    assert len(calls) == 8


def test_no_host_reads_inside_the_iterations(host_reads):
    cg_step(_linear_map(A64), _split(B64), max_iter=10, epsilon=1e-10)
    neumann_series(_linear_map(M64), _split(B64), 10, 1e-10)
    cg_step(_linear_map(A64), _split(B64), max_iter=40, epsilon=0.0)
    neumann_series(_linear_map(M64), _split(B64), 40, 0.0)
    assert len(host_reads) == 0
    # longer solves read the running flag every HOST_CHECK_EVERY iterations only, and
    # stop early once it is down
    cg_step(_linear_map(A64), _split(B64), max_iter=40, epsilon=1e-2)
    assert 1 <= len(host_reads) <= 40 // op_utils.HOST_CHECK_EVERY


def test_nan_reaches_the_result():
    b = B64.copy()
    b[1] = np.nan
    for epsilon in (0.0, 1e-3):
        assert np.isnan(_join(cg_step(_linear_map(A64), _split(b), 5, epsilon))).any()
    assert np.isnan(_join(neumann_series(_linear_map(M64), _split(b), 5, 1e-3))).any()
