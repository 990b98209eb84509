"""The benchmark problem: L2-regularised multinomial logistic regression.

Lower level (``y = (W, b)``, SGD with step ``LL_LR``):
    f(x, y) = CE(X_tr W + b, t_tr) + ½ Σ_jc exp(x_j) W_jc²
Upper level (``x``: per-feature log-strengths, Adam with step ``UL_LR``):
    F(x, y) = CE(X_val W + b, t_val)

The data are synthetic, generated here from a seed with NumPy (no download); every
implementation (jboat, the hand-written floor, the upstream packages) gets the very
same arrays. Framework-free: each runner turns them into its own tensors.
"""

import numpy as np

#: name -> (train samples, validation samples, features, classes)
SIZES = {
    "small": (200, 200, 100, 10),
    "large": (2000, 2000, 1000, 10),   # the size of the measurements
}
LL_LR = 0.1
UL_LR = 0.01
INIT_LOG_STRENGTH = -2.0
#: operator settings shared by every implementation
CG_K = 10
CG_TOLERANCE = 1e-10
FD_R = 0.01
#: RGT keeps only the last RGT_TAIL steps in the graph: truncate_iter = K - RGT_TAIL
RGT_TAIL = 3


def rgt_truncate(lower_iters):
    return max(1, lower_iters - RGT_TAIL)


def make_data(size, seed=0):
    """``(train, val)`` dicts of float32 ``x`` and int32 ``y`` arrays."""
    n_train, n_val, features, classes = SIZES[size]
    rng = np.random.RandomState(seed)
    informative = max(1, features // 10)
    centers = rng.randn(classes, informative) * 1.5

    def draw(n):
        y = rng.randint(classes, size=n)
        x = rng.randn(n, features)
        x[:, :informative] += centers[y]
        return {"x": x.astype(np.float32), "y": y.astype(np.int32)}

    return draw(n_train), draw(n_val)
