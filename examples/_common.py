"""Shared helpers of the example scripts (argument parsing, device, progress)."""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import jboat  # noqa: E402  (sets Jittor's environment defaults before Jittor loads)
import jittor as jt  # noqa: E402
import numpy as np  # noqa: E402


def parser(description, default_config, iters):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=os.path.join(ROOT, "configs", default_config),
                   help="solver recipe (YAML or JSON)")
    p.add_argument("--iters", type=int, default=iters, help="upper-level iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cuda", action="store_true", help="run on CUDA through Jittor's JIT")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="save a loss-curve PNG here (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def setup(args):
    np.random.seed(args.seed)
    jt.set_global_seed(args.seed)
    if args.cuda:
        if not jt.has_cuda:
            raise SystemExit("--cuda given but Jittor found no CUDA device.")
        jt.flags.use_cuda = 1
    return jboat.load_config(args.config)


def progress(iterable, quiet, **kw):
    if quiet:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, **kw)


def pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use (an optional
    dependency: the examples extra)."""
    import warnings

    try:
        with warnings.catch_warnings():
            # numpy warns about subnormals once Jittor's -ffast-math code is loaded
            warnings.simplefilter("ignore", UserWarning)
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'jboat[examples]'")
    return plt


def save_plot(history, path, title):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, values in history.items():
        ax.plot(values, label=key)
    ax.set_xlabel("upper-level iteration")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def meta_train(problem, tasks, iters, meta_batch, quiet, digits=4):
    """Meta-training loop of the meta-learning examples: ``iters`` UL iterations on
    ``tasks.batch(meta_batch)`` (lists of support and query feeds). Returns the mean
    query loss of each iteration's meta-batch."""
    losses_seen = []
    bar = progress(range(iters), quiet, desc="meta-learning", unit="it")
    for it in bar:
        supports, queries = tasks.batch(meta_batch)
        results, _ = problem.run_iter(supports, queries, it)
        losses = [r["gradient_operator_results"]["upper_loss"] for r in results
                  if "gradient_operator_results" in r]
        losses = losses or [r["upper_loss"] for r in results if "upper_loss" in r]
        loss = float(np.mean(losses)) if losses else float("nan")
        losses_seen.append(loss)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(query_loss=f"{loss:.{digits}f}")
    return losses_seen
