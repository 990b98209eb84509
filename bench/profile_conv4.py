"""Where one Conv4 meta-iteration spends its time: Jittor's and PyTorch's profilers.

    python bench/profile_conv4.py                     # jboat, then PyTorch at 1 and 2 threads
    python bench/profile_conv4.py --only jboat --setting FOMAML-K5

The problem is ``bench/conv4_problem.py`` (64 channels, 28x28, 5-way 1-shot, 15
queries, meta-batch 4). Each implementation runs in its own process: three untimed
meta-iterations (kernels compiled), five timed ones (milliseconds per meta-iteration),
then one meta-iteration under the framework's profiler. Kernel times are grouped by
what the kernel does:

* Jittor (``jt.profile_scope``): the oneDNN convolution forward, backward-data and
  backward-weights kernels; the pooling code op (values and arg-max indices); gathers
  (``reindex``) and scatters (``reindex_reduce``: pooling and convolution backward);
  reductions (``reduce``: batch-norm statistics, sums); matmuls; everything else is a
  fused element-wise kernel (batch-norm normalisation, ReLU and its mask, the SGD and
  Adam updates, the products of the derivatives);
* PyTorch (``torch.profiler``, self CPU time per ``aten`` op): convolution, max
  pooling, batch norm, ReLU, the rest (element-wise).
"""

import argparse
import collections
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

JITTOR_GROUPS = (("mkl_conv_backward_w", "convolution, backward-weights (oneDNN)"),
                 ("mkl_conv_backward_x", "convolution, backward-data (oneDNN)"),
                 ("mkl_conv", "convolution, forward (oneDNN)"),
                 ("mkl_matmul", "matmul (oneDNN)"),
                 ("code", "pooling kernel (values + arg-max indices)"),
                 ("reindex_reduce", "scatter (reindex_reduce)"),
                 ("reindex", "gather (reindex)"),
                 ("reduce", "reductions (batch-norm statistics, sums)"))
TORCH_GROUPS = (("conv", "convolution (all passes)"), ("max_pool", "max pooling"),
                ("batch_norm", "batch norm"), ("threshold", "ReLU"), ("clamp_min", "ReLU"),
                ("relu", "ReLU"))


def jittor_group(name):
    head = name.split("«")[0] if not name.startswith("«") else ""
    for key, label in JITTOR_GROUPS:
        if head == key or (not head and f":{key}«" in name):
            return label
    return "fused element-wise"


def torch_group(name):
    lower = name.lower()
    for key, label in TORCH_GROUPS:
        if key in lower:
            return label
    return "element-wise and other"


def table(groups, total, wall):
    print(f"{'kernel time':>12} {'share':>6} {'calls':>6}  group")
    for label, (ms, calls) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        print(f"{ms:9.1f} ms {100 * ms / total:5.1f}% {calls:6d}  {label}")
    print(f"{total:9.1f} ms in all (one meta-iteration takes {wall:.0f} ms without the profiler)")


def worker(which, setting_name, threads):
    import conv4_problem as P
    setting = P.SETTINGS[setting_name]
    data, weights = P.make_data(), P.initial_weights(64)
    if which == "torch":
        import torch
        torch.set_num_threads(threads)
        import conv4_torch as T
        step, sync = T.make_torch(setting, data, weights), T.sync
    else:
        import jboat  # noqa: F401
        import jittor as jt
        import conv4_jittor as J
        step, sync = J.make_jboat(setting, data, weights), jt.sync_all
    for it in range(3):
        step(it)
        sync()
    start = time.perf_counter()
    for it in range(5):
        step(it)
        sync()
    wall = (time.perf_counter() - start) / 5 * 1e3
    groups = collections.defaultdict(lambda: [0.0, 0])
    if which == "torch":
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(9)
        for event in prof.key_averages():
            entry = groups[torch_group(event.key)]
            entry[0] += event.self_cpu_time_total / 1e3
            entry[1] += event.count
        print(f"PyTorch {torch.__version__}, {threads} thread(s), {setting_name}")
    else:
        with jt.profile_scope(0, 0) as report:
            step(9)
            sync()
        header, rows = report[0], report[1:]
        name_at, time_at = header.index("Name"), header.index("TotalTime")
        count_at = header.index("Count")
        for row in rows:
            entry = groups[jittor_group(row[name_at])]
            entry[0] += float(row[time_at]) / 1e6
            entry[1] += int(row[count_at])
        print(f"jboat (Jittor {jt.__version__}), OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, {setting_name}")
    table(groups, sum(v[0] for v in groups.values()), wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default="MAML-K5")
    parser.add_argument("--only", default="jboat,torch")
    parser.add_argument("--worker", choices=("jboat", "torch"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.setting, args.threads)
    runs = []
    if "jboat" in args.only:
        runs.append(("jboat", 0))
    if "torch" in args.only:
        runs += [("torch", 1), ("torch", 2)]
    for which, threads in runs:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", which,
               "--setting", args.setting, "--threads", str(threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        lines = out.stdout.splitlines()
        start = next((i for i, line in enumerate(lines)
                      if line.startswith(("jboat (", "PyTorch "))), None)
        print("\n".join(lines[start:]) if start is not None else out.stderr[-3000:])
        print()


if __name__ == "__main__":
    main()
