"""jboat under ``mpirun -np 2`` (CPU): task and data parallelism, failing ranks.

The ranks run tests/mpi_scripts/cases.py and write their results to files; this
process computes the single-process references with the same functions (outside
MPI) and compares. Skipped, with the reason, where OpenMPI or Jittor's MPI
operators are missing (``make setup`` installs OpenMPI where it can:
tools/setup_mpi.sh).
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "mpi_scripts", "cases.py")
sys.path.insert(0, os.path.join(HERE, "mpi_scripts"))

#: seconds one mpirun may take (the first run compiles Jittor kernels)
LAUNCH_TIMEOUT = 480


def _skip_reason():
    missing = [tool for tool in ("mpirun", "mpicc") if shutil.which(tool) is None]
    if missing:
        return (f"OpenMPI is not installed ({' and '.join(missing)} not on the PATH); "
                f"`make setup` installs it where it can (tools/setup_mpi.sh), or run "
                f"`apt-get install openmpi-bin libopenmpi-dev`")
    import jittor as jt

    if getattr(jt, "mpi", None) is None:
        return ("Jittor has no MPI operators (it builds them at import when mpicc is on "
                "the PATH and use_mpi is not 0)")
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def mpirun(out_dir, mode, timeout=LAUNCH_TIMEOUT):
    """Run the cases script on 2 ranks; returns (returncode, output, seconds)."""
    env = dict(os.environ)
    env.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")  # containers
    command = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.insert(1, "--allow-run-as-root")
    command += [sys.executable, SCRIPT, str(out_dir), mode]
    start = time.time()
    try:
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mpirun {mode} did not finish within {timeout} s: "
                    f"{(exc.stdout or '')[-3000:]}")
    return proc.returncode, proc.stdout, time.time() - start


def read_ranks(out_dir, mode):
    out = []
    for rank in (0, 1):
        with open(os.path.join(out_dir, f"{mode}.rank{rank}.json"), encoding="utf-8") as f:
            out.append(json.load(f))
    return out


def rel_err(a, b):
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("mpi")
    code, output, _ = mpirun(out_dir, "correctness")
    assert code == 0, output[-4000:]
    return read_ranks(out_dir, "correctness")


@pytest.fixture(scope="module")
def cases():
    import cases as module

    return module


def test_two_ranks_ran(ranks):
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world"] == 2 for r in ranks)


def test_task_parallel_batch_norm_uses_each_tasks_own_statistics(ranks, cases):
    """Jittor's BatchNorm (sync=True by default) averages batch statistics across MPI
    ranks; with different tasks on the ranks that mixes tasks. jboat turns the sync off
    in task mode (and back on after the iteration): the 2-rank meta-gradient equals one
    process's over all 4 tasks."""
    reference = cases.run_maml_bn((0, 1))["meta_gradient"]
    for r in ranks:
        assert rel_err(r["maml_bn"]["meta_gradient"], reference) < 1e-4
        assert r["maml_bn"]["bn_sync_after"] is True          # restored after run_iter
    own_share = cases.run_maml_bn((0, 2))["meta_gradient"]   # control: half the tasks
    assert rel_err(own_share, reference) > 1e-2


def test_data_parallel_batch_norm_gives_the_full_batch_hypergradient(ranks, cases):
    """data_parallel keeps Jittor's cross-rank BatchNorm statistics (the DARTS benchmark's
    ranks rely on it): NGD + RAD through two momentum steps of a conv + BatchNorm net, 3
    rows per rank, equals one process holding all 6 rows, to all derivative orders."""
    reference = cases.run_bn_data((0, 1))["hypergradient"]
    for r in ranks:
        assert rel_err(r["bn_data"]["hypergradient"], reference) < 1e-4
        assert r["bn_data"]["bn_sync_after"] is True
    own_rows = cases.run_bn_data((0, 2))["hypergradient"]     # control: half the batch
    assert rel_err(own_rows, reference) > 1e-2


@pytest.mark.parametrize("key", ["meta_gradient", "meta_parameters"])
def test_maml_tasks_split_2_2_equal_one_process_over_4(ranks, cases, key):
    # NGD+IAD, accumulate_grad: rank 0 runs tasks 0-1, rank 1 tasks 2-3; the summed
    # meta-gradient (and the Adam steps taken with it) equal one process's over all 4
    reference = cases.run_maml((0, 1))[key]
    for r in ranks:
        assert rel_err(r["maml"][key], reference) < 1e-5
    own_share = cases.run_maml((0, 2))["meta_gradient"]   # control: half the tasks
    assert rel_err(own_share, cases.run_maml((0, 1))["meta_gradient"]) > 1e-2


@pytest.mark.parametrize("key", ["x", "y"])
def test_task_parallel_sums_di_initialisation_gradients(ranks, cases, key):
    reference = cases.run_di((0, 1))[key]
    for r in ranks:
        assert rel_err(r["di"][key], reference) < 1e-5


def test_fo_task_parallel_sums_the_ranks_ul_gradients(ranks, cases):
    # FO operators move the LL variables task after task: each rank carries its own
    # from the common start; the UL gradients of the ranks' shares are summed
    shares = [cases.run_fo((k, 2)) for k in (0, 1)]
    expected = shares[0]["gradient"] + shares[1]["gradient"]
    assert rel_err(shares[0]["gradient"], shares[1]["gradient"]) > 1e-2
    for k, r in enumerate(ranks):
        assert rel_err(r["fo"]["gradient"], expected) < 1e-5
        assert rel_err(r["fo"]["lower"], shares[k]["lower"]) < 1e-5


DATA_CASES = ("data_RAD", "data_CG", "data_NS", "data_FD", "data_IGA", "data_PTT_RAD",
              "data_FOA_RAD", "data_RGT_RAD", "data_GDA", "data_DI", "data_2tasks")


def _reference(cases, name):
    if name == "data_2tasks":   # two tasks on every rank, each task's rows sharded
        return cases.run_l2((0, 1), na_op=("RAD",), tasks=2)
    if name in ("data_GDA", "data_DI"):
        return cases.run_l2((0, 1), gm_op=("NGD", name[len("data_"):]), na_op=("RAD",))
    ops = tuple(name[len("data_"):].split("_"))
    return cases.run_l2((0, 1), na_op=ops)


@pytest.mark.parametrize("name", DATA_CASES)
def test_sharded_data_gives_full_data_hypergradient(ranks, cases, name):
    # each rank holds 4 of the 8 LL and UL rows; data_parallel: the hyper-gradient
    # of the full-data (mean) losses, as one process holding all 8 rows computes it
    reference = _reference(cases, name)
    for r in ranks:
        assert rel_err(r[name]["hypergradient"], reference["hypergradient"]) < 1e-5
        assert rel_err(r[name]["ul_loss"], reference["ul_loss"]) < 1e-5
        # the LL model: y_K (the full-data trajectory), or y_0 after DI's step
        assert rel_err(r[name]["lower"], reference["lower"]) < 1e-5


@pytest.mark.parametrize("ops", [("IAD",), ("IAD", "CG")])
def test_sharded_task_data_gives_full_data_meta_gradient(ranks, cases, ops):
    # MAML-style (LL model = UL model), one task whose rows are split over the ranks
    reference = cases.run_meta_data((0, 1), ops)["meta_gradient"]
    for r in ranks:
        assert rel_err(r["meta_data_" + "_".join(ops)]["meta_gradient"], reference) < 1e-5


@pytest.mark.parametrize("index", [0, 1])
def test_checkpointed_data_parallel_equals_plain_full_data(ranks, cases, index):
    # the backward replays of checkpointed RAD run the steps' collectives again
    name, ops, _ = cases.CHECKPOINTED_CASES[index]
    reference = cases.run_l2((0, 1), na_op=ops)
    for r in ranks:
        assert rel_err(r[name]["hypergradient"], reference["hypergradient"]) < 1e-5
        assert rel_err(r[name]["lower"], reference["lower"]) < 1e-5


@pytest.mark.parametrize("key", ["meta_gradient", "meta_parameters"])
def test_checkpointed_maml_task_parallel_equals_plain(ranks, cases, key):
    reference = cases.run_maml((0, 1))[key]
    for r in ranks:
        assert rel_err(r["maml_ckpt"][key], reference) < 1e-5


def test_without_data_parallel_each_rank_solves_its_shard(ranks, cases):
    # control: the ranks average hyper-gradients of their own shard problems
    full = cases.run_l2((0, 1), na_op=("RAD",))["hypergradient"]
    per_rank = [cases.run_l2((k, 2), na_op=("RAD",), data_parallel=False)["hypergradient"]
                for k in (0, 1)]
    for r in ranks:
        got = r["replica_RAD"]["hypergradient"]
        assert rel_err(got, np.mean(per_rank, axis=0)) < 1e-5
        assert rel_err(got, full) > 1e-3


def test_a_failing_rank_stops_the_job_at_once(tmp_path):
    code, output, seconds = mpirun(tmp_path, "fail", timeout=240)
    assert code != 0
    assert "rank 1 failed on purpose" in output
    assert "jboat: rank 1 of 2 stopped on RuntimeError" in output
    assert not os.path.exists(tmp_path / "fail.rank0.json")   # rank 0 was stopped
    assert "Timeout (" not in output                          # not by its watchdog
    assert seconds < 120, output[-3000:]


def test_a_rank_that_never_arrives_is_bounded_by_mpi_timeout(tmp_path):
    # rank 1 sleeps instead of joining the collectives; rank 0 (mpi_timeout=5)
    # dumps its stack and exits with code 1, and mpirun stops rank 1
    code, output, seconds = mpirun(tmp_path, "hang", timeout=240)
    assert code != 0
    assert "Timeout (0:00:05)!" in output
    assert "distributed.py" in output
    assert not os.path.exists(tmp_path / "hang.rank1.json")
    assert seconds < 120, output[-3000:]


# -- the examples under mpirun ---------------------------------------------------------------
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")


def run_example(name, args, ranks=None, timeout=LAUNCH_TIMEOUT):
    command = [sys.executable, os.path.join(EXAMPLES, name)] + list(args)
    if ranks:
        command = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + command
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.insert(1, "--allow-run-as-root")
    env = dict(os.environ)
    env.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ranks ")]
    assert len(lines) == 1, proc.stdout[-3000:]          # rank 0 alone prints
    return lines[0]


def checksum(line):
    return float(line.rsplit("checksum ", 1)[1])


def test_meta_learning_example_two_ranks_match_one_and_resume(tmp_path):
    ckpt = tmp_path / "maml.pkl"
    two = run_example("mpi_meta_learning.py", ["--iters", "2", "--quiet",
                                               "--checkpoint", str(ckpt)], ranks=2)
    one = run_example("mpi_meta_learning.py", ["--iters", "2", "--quiet"])
    assert two.startswith("ranks 2:") and one.startswith("ranks 1:")
    assert abs(checksum(two) - checksum(one)) < 1e-5 * abs(checksum(one))
    assert ckpt.exists()
    resumed = run_example("mpi_meta_learning.py", ["--iters", "1", "--quiet",
                                                   "--resume", str(ckpt)], ranks=2)
    assert resumed.startswith("ranks 2: 1 meta-iterations")


def test_hyper_cleaning_example_two_ranks_match_one():
    two = run_example("mpi_hyper_cleaning.py", ["--iters", "3", "--quiet"], ranks=2)
    one = run_example("mpi_hyper_cleaning.py", ["--iters", "3", "--quiet"])
    assert abs(checksum(two) - checksum(one)) < 1e-3
    assert two.split(";")[1:] == one.split(";")[1:]    # same losses and metrics as printed
