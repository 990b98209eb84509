"""Where one DARTS search step's memory goes: Jittor against PyTorch, phase by phase.

    python bench/profile_darts_memory.py                  # 3 cells, batch 8, C=16, 32x32
    python bench/profile_darts_memory.py --by-op          # also Jittor's live buffers by op
    python bench/profile_darts_memory.py --primitives none,dil_conv_3x3 --layers 3 --batch 8

The step is ``bench/bench_darts.py``'s (NGD + RAD through one SGD step with momentum and
weight decay): the hand-written Jittor floor, which jboat matches within 1 % in memory,
and the PyTorch peer. Each runs in its own process, with memory handed back to the
operating system as soon as it is freed (glibc ``MALLOC_MMAP_THRESHOLD_=131072`` for
both, and Jittor's caching allocator off, ``use_sfrl_allocator=0``), so that the
resident set follows the live tensors instead of what an allocator keeps cached. One
untimed step loads the kernels; the next step is measured twice:

* ``whole step``: peak resident memory above the level before the step, the step as
  the benchmark runs it (Jittor: one lazy graph executed at once);
* phases: the same step executed in four parts (train forward; first backward, which
  keeps its graph; validation forward at the stepped weights; the second backward to
  the architecture): memory still held after each part (``now``) and the peak during
  it, above the level before the step.

``--by-op`` (Jittor only; slow: Jittor's memory profiler, in a third process with
Jittor's own allocator, which the profiler needs) prints the Var buffers that are alive
at the peak of the whole step, grouped by the op that produced them.
Not a test: it prints tables.
"""

import argparse
import collections
import gc
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, HERE)

import bench_darts as B  # noqa: E402
from machine import memory_mb, reset_peak, run_result_worker  # noqa: E402

#: memory returned to the system on free: the resident set follows the live tensors
RETURN_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "131072", "use_sfrl_allocator": "0"}


class Meter:
    """Peak and current resident memory above a base, part by part."""

    def __init__(self):
        self.base = memory_mb()[0]
        self.parts = []
        reset_peak()

    def mark(self, name):
        now, peak = memory_mb()
        self.parts.append({"phase": name, "now_mb": now - self.base,
                           "peak_mb": peak - self.base})
        reset_peak()


# -- the two implementations, phase by phase ------------------------------------------------
def jittor_phases(floor, it):
    """The floor's hyper-gradient (``bench_darts.Floor.hypergradient``), each part
    executed before the next is built; returns the :class:`Meter`."""
    import jittor as jt
    from jboat.higher_jit import fusion
    meter = Meter()

    def stage(name, values):
        jt.sync(values)
        meter.mark(name)
    # the barriers the floor's first step needed (Jittor may fail to compile a fused kernel)
    with fusion.fusion_barriers(floor.fusion_level):
        floor.hypergradient(it, stage)
    return meter


def torch_phases(search, it):
    """``darts_torch.SearchStep.hypergradient``, part by part (PyTorch runs eagerly)."""
    meter = Meter()
    search.hypergradient(it, meter.mark)
    return meter


def live_by_op(floor, it, limit=12):
    """The Var buffers alive at the peak of the floor's whole step, grouped by the op
    that produced them: ``[(op, MiB, count)]``, largest first."""
    import jittor as jt
    from jboat.higher_jit import fusion
    with fusion.fusion_barriers(floor.fusion_level):
        values = floor._step_values(it)
        graph = jt.dump_all_graphs()       # the lazy graph: which op makes which Var
        info, inputs = list(graph.nodes_info), list(graph.inputs)
        del graph
        producer = {}
        for i, node in enumerate(info):
            if node.startswith("Var("):
                var_id = int(node[4:node.index(":")])
                op = info[inputs[i][0]] if inputs[i] else ""
                match = re.search(r",([^,>]*)->", op)
                producer[var_id] = match.group(1) if match else "input or executed"
        jt.flags.profile_memory_enable = 1
        try:
            jt.sync(B.flat_vars(values))
            records = jt.get_max_memory_info().split("[!@#div1!@#]")   # needs the flag on
        finally:
            jt.flags.profile_memory_enable = 0
    size, count = collections.Counter(), collections.Counter()
    for record in records[1:]:
        fields = record.split("[!@#div2!@#]")
        var_id = int(fields[0][4:fields[0].index(":")])
        op = producer.get(var_id, "created during execution")
        size[op] += int(fields[1])
        count[op] += 1
    rows = [(op, mb / 2 ** 20, count[op]) for op, mb in size.most_common(limit)]
    return int(records[0]) / 2 ** 20, rows


# -- workers ------------------------------------------------------------------------------------
def by_op_worker(args):
    """:func:`live_by_op` of the floor's second step (Jittor's own allocator)."""
    import jboat  # noqa: F401  (environment defaults before Jittor)
    import jittor as jt
    network, architecture, feeds = B.build(args.layers, args.batch)
    floor = B.Floor(network, architecture, feeds)
    floor.step(0)                             # kernels compiled and loaded
    jt.sync_all(True)
    gc.collect()
    live_peak, rows = live_by_op(floor, 1)
    sys.stdout.write("\nRESULT " + json.dumps({"worker": args.worker, "live_peak_mb": live_peak,
                                               "by_op": rows}) + "\n")


def worker(args):
    if args.worker == "torch":
        search = B.torch_search(args.layers, args.batch, args.threads)
        step, sync = search.step, (lambda: None)
        phases = lambda it: torch_phases(search, it)  # noqa: E731
    else:
        import jboat  # noqa: F401  (environment defaults before Jittor)
        import jittor as jt
        network, architecture, feeds = B.build(args.layers, args.batch)
        floor = B.Floor(network, architecture, feeds)
        step, sync = floor.step, (lambda: jt.sync_all(True))
        phases = lambda it: jittor_phases(floor, it)  # noqa: E731
    step(0)                                   # kernels compiled and loaded
    sync()
    gc.collect()
    meter = Meter()
    step(1)
    sync()
    meter.mark("whole step")
    gc.collect()
    parts = phases(2).parts
    record = {"worker": args.worker, "whole_mb": meter.parts[0]["peak_mb"], "phases": parts}
    sys.stdout.write("\nRESULT " + json.dumps(record) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=B.CHANNELS)
    parser.add_argument("--side", type=int, default=B.SIDE)
    parser.add_argument("--primitives", default=",".join(B.PRIMITIVES))
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    parser.add_argument("--by-op", action="store_true",
                        help="Jittor: the live buffers at the peak, by producing op (slow)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per process")
    parser.add_argument("--worker", choices=("jittor", "torch", "jittor-by-op"))
    args = parser.parse_args(argv)
    B.set_size(args.channels, args.side, args.primitives.split(","))
    if args.worker == "jittor-by-op":
        return by_op_worker(args)
    if args.worker:
        return worker(args)
    print(f"# DARTS search step memory: {args.layers} cells, batch {args.batch}, "
          f"C={B.CHANNELS}, {B.SIDE}x{B.SIDE}, candidates: {', '.join(B.PRIMITIVES)}")
    results = {}
    for name in ("jittor", "torch") + (("jittor-by-op",) if args.by_op else ()):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name,
               "--layers", str(args.layers), "--batch", str(args.batch),
               "--channels", str(B.CHANNELS), "--side", str(B.SIDE),
               "--primitives", ",".join(B.PRIMITIVES), "--threads", str(args.threads)]
        # Jittor's memory profiler needs its own allocator (with it off it sees a fraction)
        env = None if name == "jittor-by-op" else RETURN_MEMORY
        results[name] = run_result_worker(cmd, ROOT, args.timeout, env=env)
        if "error" in results[name]:
            print(f"{name}: {results[name]['error']}")
    if any("error" in r for r in results.values()):
        return results
    jit, tor = results["jittor"], results["torch"]
    print("\nMiB above the level before the step (memory returned to the system on free)\n")
    print("| | Jittor now | Jittor peak | PyTorch now | PyTorch peak |")
    print("|---|---:|---:|---:|---:|")
    for j, t in zip(jit["phases"], tor["phases"]):
        print(f"| {j['phase']} | {j['now_mb']:.0f} | {j['peak_mb']:.0f} | "
              f"{t['now_mb']:.0f} | {t['peak_mb']:.0f} |")
    print(f"| whole step (one execution) | | {jit['whole_mb']:.0f} | | {tor['whole_mb']:.0f} |")
    if args.by_op:
        ops = results["jittor-by-op"]
        print(f"\nJittor (its own allocator): live Var buffers at the peak of the step, "
              f"{ops['live_peak_mb']:.0f} MiB in all, by producing op\n")
        print("| op | MiB | buffers |")
        print("|---|---:|---:|")
        for op, mb, count in ops["by_op"]:
            print(f"| {op} | {mb:.0f} | {count} |")
    return results


if __name__ == "__main__":
    main()
