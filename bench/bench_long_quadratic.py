"""One NGD+RAD hyper-gradient of a separable quadratic with a 200k-dim lower level and
K = 1000 steps, through ``Problem.run_iter``, checked against its closed form.

    OMP_NUM_THREADS=1 python bench/bench_long_quadratic.py --replay segment
    OMP_NUM_THREADS=1 python bench/bench_long_quadratic.py --replay step
    OMP_NUM_THREADS=1 python bench/bench_long_quadratic.py --plain     # may not finish

LL: f(x, y) = ½ Σ a_i y_i² − Σ b_i x_i y_i; UL: F = ½‖y − t‖² + ½ μ‖x‖², y, x in R^N.
With SGD (lr s) each coordinate follows y ← m y + s b x, m = 1 − s a, so
dF/dx = s b (1 − m^K)/(1 − m) (y_K − t) + μ x exactly. Prints the time and the peak
resident memory (above the level before the iteration) of the first iteration
(compilation included) and of a second one, and the relative error. One process per
run; every operation is element-wise, so plain reverse mode hands Jittor one graph of
K steps to fuse and compile.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import jboat  # noqa: E402  (environment defaults before Jittor)
import jittor as jt  # noqa: E402
import numpy as np  # noqa: E402
from machine import memory_mb, reset_peak  # noqa: E402


class Vector(jt.Module):
    def __init__(self, values):
        self.value = jt.array(values.astype(np.float32))

    def execute(self):
        return self.value


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=200000)
    p.add_argument("--K", type=int, default=1000)
    p.add_argument("--every", default="auto")
    p.add_argument("--replay", default="segment", choices=("segment", "step"))
    p.add_argument("--plain", action="store_true", help="plain RAD (no checkpoints)")
    args = p.parse_args()
    rng = np.random.RandomState(0)
    n, s, mu = args.dim, 0.1, 0.1
    a, b, t = rng.uniform(0.5, 2.0, n), rng.uniform(-1, 1, n), rng.randn(n)
    x0, y0 = rng.randn(n) * 0.5, rng.randn(n) * 0.5

    def lower_loss(feed, upper_model, lower_model, **kwargs):
        y, x = lower_model(**kwargs), upper_model()
        return 0.5 * (feed["a"] * y * y).sum() - (feed["b"] * x * y).sum()

    def upper_loss(feed, upper_model, lower_model, **kwargs):
        y, x = lower_model(**kwargs), upper_model()
        r = y - feed["t"]
        return 0.5 * (r * r).sum() + 0.5 * mu * (x * x).sum()

    upper, lower = Vector(x0), Vector(y0)
    config = {"gm_op": ["NGD"], "na_op": ["RAD"], "lower_iters": args.K, "return_grad": True,
              "copy_last_param": False, "track_losses": False,
              "lower_level_model": lower, "upper_level_model": upper,
              "lower_level_var": list(lower.parameters()),
              "upper_level_var": list(upper.parameters()),
              "lower_level_opt": jt.optim.SGD(list(lower.parameters()), lr=s),
              "upper_level_opt": jt.optim.SGD(list(upper.parameters()), lr=0.1)}
    if not args.plain:
        every = args.every if args.every == "auto" else int(args.every)
        config["RAD"] = {"checkpoint_every": every, "replay": args.replay}
    problem = jboat.Problem(config, {"lower_level_loss": lower_loss,
                                     "upper_level_loss": upper_loss})
    problem.build_ll_solver().build_ul_solver()
    feeds = ({"a": jt.array(a.astype(np.float32)), "b": jt.array(b.astype(np.float32))},
             {"t": jt.array(t.astype(np.float32))})
    m = 1 - s * a
    y_K = m ** args.K * y0 + s * b * x0 * (1 - m ** args.K) / (1 - m)
    exact = s * b * (1 - m ** args.K) / (1 - m) * (y_K - t) + mu * x0
    mode = "plain RAD" if args.plain else f"checkpointed ({args.every}, {args.replay})"
    for label in ("first (compilation included)", "second"):
        reset_peak()
        base = memory_mb()[0]
        start = time.perf_counter()
        grads, _ = problem.run_iter(*feeds, 0)
        seconds = time.perf_counter() - start
        err = np.linalg.norm(grads[0].numpy() - exact) / np.linalg.norm(exact)
        peak = memory_mb()[1] - base
        print(f"{mode}, N = {n}, K = {args.K}, {label}: {seconds:.2f} s, "
              f"peak {peak:.0f} MiB above the start, rel err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
