"""The Conv4 meta-learning benchmark problem, shared by every implementation.

Omniglot-sized: 28x28 grey images, 5-way 1-shot tasks with 15 queries per class, a
meta-batch of 4 tasks, Conv4 (4 x [Conv 3x3 -> BatchNorm (training mode) -> ReLU ->
MaxPool 2x2] -> Linear) with 64 channels unless told otherwise. Inner SGD lr 0.1, meta
Adam lr 1e-3. iMAML: proximal strength 1, CG with 5 iterations; its meta-gradient is
iMAML's implicit one, ``lam (H + lam I)^-1 grad F(y_K)`` with ``H`` the support loss's
Hessian at the last inner iterate ``y_K`` (no path through the inner trajectory): jboat's
``NGD + CG`` with the proximal term anchored at the meta-parameters. The images are random
(NumPy seed 0): the timings do not depend on the values; four meta-batches are cycled.
Every implementation starts from the same weights (``initial_weights``).
"""

import os

import numpy as np

WAYS, SHOTS, QUERY, META_BATCH, SIZE = 5, 1, 15, 4, 28
FINAL_SIDE = 1            # 28 -> 14 -> 7 -> 3 -> 1
INNER_LR, META_LR = 0.1, 1e-3
#: iMAML's proximal strength (JBOAT_BENCH_PROXIMAL overrides it, e.g. for the check)
PROXIMAL = float(os.environ.get("JBOAT_BENCH_PROXIMAL", 1.0))
CG_K, CG_TOLERANCE = 5, 1e-10
#: jboat's operators per method. iMAML is NGD + CG, not the ``imaml.yaml`` recipe's
#: IAD + CG (upstream's mix of unrolled and implicit differentiation w.r.t. ``y_0``,
#: which tends to 0 as the inner loop converges; docs/operators.md, "iMAML")
NA_OPS = {"maml": ["IAD"], "fomaml": ["FOA", "IAD"], "imaml": ["CG"]}
#: name -> setting; the issue's rows
SETTINGS = {
    "MAML-K1": {"method": "maml", "K": 1},
    "MAML-K5": {"method": "maml", "K": 5},
    "MAML-K10": {"method": "maml", "K": 10},
    "FOMAML-K5": {"method": "fomaml", "K": 5},
    "iMAML-K5": {"method": "imaml", "K": 5},
}


def make_data(n_batches=4, seed=0):
    """``n_batches`` meta-batches: lists of tasks {xs, ys, xq, yq} (NumPy)."""
    rng = np.random.RandomState(seed)
    batches = []
    for _ in range(n_batches):
        batch = []
        for _ in range(META_BATCH):
            batch.append({
                "xs": rng.randn(WAYS * SHOTS, 1, SIZE, SIZE).astype(np.float32),
                "ys": np.repeat(np.arange(WAYS), SHOTS).astype(np.int32),
                "xq": rng.randn(WAYS * QUERY, 1, SIZE, SIZE).astype(np.float32),
                "yq": np.repeat(np.arange(WAYS), QUERY).astype(np.int32)})
        batches.append(batch)
    return batches


def initial_weights(channels, seed=1):
    """Trainable weights in module order: [conv w, conv b, bn gamma, bn beta] x 4,
    head W (ways x features), head b."""
    rng = np.random.RandomState(seed)
    weights = []
    in_channels = 1
    for _ in range(4):
        bound = 1.0 / np.sqrt(in_channels * 9)
        weights += [rng.uniform(-bound, bound, (channels, in_channels, 3, 3)),
                    rng.uniform(-bound, bound, channels), np.ones(channels),
                    np.zeros(channels)]
        in_channels = channels
    features = channels * FINAL_SIDE ** 2
    bound = 1.0 / np.sqrt(features)
    weights += [rng.uniform(-bound, bound, (WAYS, features)),
                rng.uniform(-bound, bound, WAYS)]
    return [w.astype(np.float32) for w in weights]


def channels(weights):
    return weights[0].shape[0]
