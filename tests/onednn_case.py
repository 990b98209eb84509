"""Hyper-gradients of a small L2-regularised logistic regression, printed as JSON.

Run by tests/test_onednn.py in two subprocesses, one with ``use_mkl=1`` (oneDNN) and
one with ``use_mkl=0`` (Jittor's built-in kernels); the environment decides. The
matmuls are float32 ``[n, f] x [f, c]``, the shape Jittor relays to oneDNN's
``mkl_matmul``; whether that happened is reported too.
"""

import json
import os
import sys

import jboat  # noqa: F401  (before jittor: environment defaults)
import jittor as jt
import numpy as np

N, FEATURES, CLASSES = 8, 5, 3
#: (gm_op, na_op) pairs compared
COMBINATIONS = ((["NGD"], ["RAD"]), (["NGD"], ["CG"]), (["NGD"], ["NS"]), (["NGD"], ["FD"]))


class Linear(jt.Module):
    def __init__(self, weight):
        self.weight = jt.array(weight)

    def execute(self, x):
        return jt.matmul(x, self.weight)


class Strength(jt.Module):
    def __init__(self, values):
        self.log_strength = jt.array(values)

    def execute(self):
        return self.log_strength


def lower_loss(feed, upper_model, lower_model, **kwargs):
    weight = kwargs["params"][0] if "params" in kwargs else lower_model.weight
    penalty = (jt.exp(upper_model()).reshape(-1, 1) * weight * weight).sum()
    return jt.nn.cross_entropy_loss(lower_model(feed["x"], **kwargs), feed["y"]) + 0.5 * penalty


def upper_loss(feed, upper_model, lower_model, **kwargs):
    return jt.nn.cross_entropy_loss(lower_model(feed["x"], **kwargs), feed["y"])


def hypergradient(gm_op, na_op):
    rng = np.random.RandomState(0)
    data = [{"x": jt.array(rng.randn(N, FEATURES).astype(np.float32)),
             "y": jt.array(rng.randint(CLASSES, size=N).astype(np.int32))} for _ in range(2)]
    lower = Linear((rng.randn(FEATURES, CLASSES) * 0.1).astype(np.float32))
    upper = Strength((rng.randn(FEATURES) * 0.5 - 1.0).astype(np.float32))
    config = {"gm_op": gm_op, "na_op": na_op, "lower_iters": 4, "return_grad": True,
              "track_losses": False, "CG": {"k": 6, "tolerance": 0.0},
              "lower_level_model": lower, "upper_level_model": upper,
              "lower_level_var": list(lower.parameters()),
              "upper_level_var": list(upper.parameters()),
              "lower_level_opt": jt.optim.SGD(lower.parameters(), lr=0.3),
              "upper_level_opt": jt.optim.SGD(upper.parameters(), lr=0.1)}
    problem = jboat.Problem(config, {"lower_level_loss": lower_loss,
                                     "upper_level_loss": upper_loss})
    problem.build_ll_solver().build_ul_solver()
    with jt.profile_scope(warmup=0, rerun=0) as report:
        grads, _ = problem.run_iter(data[0], data[1], 0)
        jt.sync(grads)
    used = any("mkl_matmul" in str(row[0]) for row in report[1:])
    return [g.numpy().astype(float).tolist() for g in grads], used


def main():
    out = {"use_mkl": os.environ.get("use_mkl"), "grads": {}, "mkl_matmul": {}}
    for gm_op, na_op in COMBINATIONS:
        name = "+".join(gm_op + na_op)
        out["grads"][name], out["mkl_matmul"][name] = hypergradient(gm_op, na_op)
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
