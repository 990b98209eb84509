"""Multiple processes: jboat on Jittor's MPI engine (``mpirun -np N python script.py``).

jboat does not start processes or open connections of its own. Under ``mpirun``
Jittor initialises MPI when it is imported (``jt.in_mpi``, ``jt.rank``,
``jt.world_size``) and provides ``Var.mpi_all_reduce`` (differentiable: its
backward is an all-reduce of the incoming gradients) and ``Var.mpi_broadcast``;
this module builds the few collectives jboat needs on those two operators. Every
function here is a no-op (returns its input) outside MPI, so single-process runs
are unchanged.

Modes (chosen by :func:`parallel_mode`, applied by :class:`jboat.Problem`):

* ``"task"`` — ``accumulate_grad`` (GM/NA) or ``fogm_batch_input`` (FO) under MPI:
  each rank passes its own share of the task list; the upper-level (UL)
  hyper-gradient buffers and, with DI, the lower-level (LL) initialisation
  buffers are **summed** across ranks after the tasks, so every rank takes the
  same UL step as one process running the whole list (sum semantics).
* ``"data"`` — ``data_parallel: true`` under MPI: each rank holds an equal-sized
  shard of the LL and UL data and its losses are means over its shard. Every LL
  step averages the step gradient across ranks (:func:`mean_across_ranks`,
  differentiable, one all-reduce of ``|y|`` numbers per step), so the trajectory
  is the full-data one; operators add the reductions their non-linear steps need
  (table in ``docs/performance.md``, "Scaling across processes"), and the buffers are
  **averaged** at the end: the result is the hyper-gradient of the full-data
  (mean) losses.
* ``"replica"`` — MPI with neither: every rank solves its own problem and the UL
  buffers are averaged (Jittor's usual data-parallel rule for optimizers).

Jittor's optimizers average gradients across ranks inside ``step`` when
``jt.in_mpi``. jboat reduces its buffers explicitly (sum or mean, above) and takes
its optimizer steps with that implicit averaging switched off
(:func:`no_implicit_optimizer_sync`), so nothing is reduced twice and the steps
that must stay local (an FO operator's LL updates of one task) stay local.

Rank-aware behaviour: records of the ``jboat`` logger below ERROR are dropped on
ranks other than 0; ``Problem`` writes ``loss_log_path`` on rank 0 only;
:func:`save_checkpoint` writes on rank 0 and every rank can
:func:`load_checkpoint`. A rank that raises an uncaught exception prints it and
exits at once with code 1 (instead of waiting in ``MPI_Finalize`` while the
others wait in a collective for it), which makes ``mpirun`` stop the job; a rank
blocked in one ``run_iter`` for longer than ``mpi_timeout`` seconds dumps its
Python stack and exits with code 1 (:func:`watchdog`).

This module imports Jittor lazily: ``import jboat`` installs the logging filter
and the exception hook before Jittor is imported.
"""

import contextlib
import faulthandler
import logging
import os
import sys

__all__ = ["launched_by_mpirun", "in_mpi", "rank", "world_size", "is_main_process",
           "all_reduce", "mean_across_ranks", "sum_across_ranks", "all_reduce_buffers",
           "broadcast_vars", "barrier", "ranks_where", "check_same_on_all_ranks",
           "parallel_mode", "data_parallel_reduction", "no_implicit_optimizer_sync",
           "local_batch_norm",
           "watchdog", "save_checkpoint", "load_checkpoint", "install_process_hooks",
           "MPIUnavailableError"]

logger = logging.getLogger("jboat")

_JITTOR_OPS = {"sum": "add", "mean": "mean"}


class MPIUnavailableError(RuntimeError):
    """Running under ``mpirun`` but Jittor was built without its MPI operators."""


# -- who am I ----------------------------------------------------------------------------------
def launched_by_mpirun():
    """True when this process was started by OpenMPI's ``mpirun`` (Jittor's own test:
    ``OMPI_COMM_WORLD_SIZE`` is set). Needs no Jittor import."""
    return "OMPI_COMM_WORLD_SIZE" in os.environ


def _env_rank():
    try:
        return int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    except ValueError:
        return 0


def _env_world_size():
    try:
        return int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _jittor():
    import jittor as jt

    return jt


def in_mpi():
    """True when Jittor runs under MPI with its MPI operators available.

    Follows ``jt.in_mpi`` at call time, so code inside ``jt.single_process_scope``
    sees False.
    """
    if not launched_by_mpirun():
        return False
    jt = _jittor()
    return bool(getattr(jt, "in_mpi", False)) and getattr(jt, "mpi", None) is not None


def rank():
    """This process's rank (0 outside MPI)."""
    return int(_jittor().mpi.world_rank()) if in_mpi() else 0


def world_size():
    """Number of ranks (1 outside MPI)."""
    return int(_jittor().mpi.world_size()) if in_mpi() else 1


def is_main_process():
    """True on rank 0 (and outside MPI): the rank that logs, prints and writes files."""
    if launched_by_mpirun() and "jittor" not in sys.modules:
        return _env_rank() == 0
    return rank() == 0


# -- collectives -------------------------------------------------------------------------------
def all_reduce(values, op="mean"):
    """All-reduce a list of Vars across ranks with **one** collective per dtype.

    The entries are flattened and concatenated, reduced with Jittor's
    ``mpi_all_reduce`` and split back, so the call is differentiable: the
    backward pass all-reduces the incoming gradients (Jittor's rule), i.e. the
    derivative seen by rank ``r`` through a ``"mean"`` is the mean over ranks of
    the gradients arriving there. One collective keeps the order of collectives
    the same on every rank whatever order Jittor's scheduler picks.

    Args:
        values: list of Var or None (None entries are passed through).
        op: ``"mean"`` or ``"sum"``.

    Returns:
        list aligned with ``values``. Outside MPI: ``values`` unchanged.

    Cost: one all-reduce of ``Σ |v|`` numbers.
    """
    values = list(values)
    if op not in _JITTOR_OPS:
        raise ValueError(f"op must be 'mean' or 'sum', got {op!r}.")
    if not in_mpi():
        return values
    jt = _jittor()
    out = list(values)
    by_dtype = {}
    for i, v in enumerate(values):
        if v is not None:
            by_dtype.setdefault(str(v.dtype), []).append(i)
    for dtype in sorted(by_dtype):
        indices = by_dtype[dtype]
        flat = jt.concat([values[i].reshape(-1) for i in indices])
        reduced = flat.mpi_all_reduce(_JITTOR_OPS[op])
        start = 0
        for i in indices:
            size = max(int(values[i].numel()), 1)
            out[i] = reduced[start:start + size].reshape(values[i].shape)
            start += size
    return out


def mean_across_ranks(values):
    """Differentiable mean over ranks of a list of Vars (see :func:`all_reduce`)."""
    return all_reduce(values, "mean")


def sum_across_ranks(values):
    """Differentiable sum over ranks of a list of Vars (see :func:`all_reduce`)."""
    return all_reduce(values, "sum")


def all_reduce_buffers(variables, op="sum"):
    """Reduce the gradient buffers ``var._custom_grad`` of ``variables`` across ranks.

    After the call every rank holds the same buffers: the sum (``op="sum"``) or mean
    (``"mean"``) of the ranks' buffers, a missing buffer counting as zero. A
    variable gets a buffer where at least one rank had one, so a variable no rank
    touched is still skipped by the optimizer (as in one process). Stop-grad
    variables are left alone. One collective (plus one number per variable for
    the "has a buffer" flags). Outside MPI: nothing happens.
    """
    if not in_mpi():
        return
    jt = _jittor()
    variables = [v for v in variables if not v.is_stop_grad()]
    if not variables:
        return
    grads = [getattr(v, "_custom_grad", None) for v in variables]
    present = jt.array([1.0 if g is not None else 0.0 for g in grads]).float32()
    filled = [g.detach() if g is not None else jt.zeros(v.shape, v.dtype)
              for v, g in zip(variables, grads)]
    reduced = all_reduce(filled + [present], op)
    # the flags ride along in the same collective when the buffers are float32
    flags = reduced[-1].numpy()
    for var, grad, flag in zip(variables, reduced[:-1], flags):
        var._custom_grad = grad.detach() if flag > 0 else None


def broadcast_vars(variables, root=0):
    """Overwrite each Var with rank ``root``'s value (``update``, same objects)."""
    if not in_mpi():
        return
    jt = _jittor()
    for var in variables:
        # through the host: the variable keeps no link to the collective in its graph
        value = var.detach().mpi_broadcast(root).numpy()
        var.update(jt.array(value).cast(var.dtype))


def barrier():
    """Wait until every rank arrives (no-op outside MPI)."""
    if in_mpi():
        _jittor().mpi.mpi_barrier()


def ranks_where(flag):
    """The ranks on which ``flag`` is true (every rank must call this).

    One all-reduce of ``world_size`` numbers; outside MPI: ``[0]`` or ``[]``.
    """
    if not in_mpi():
        return [0] if flag else []
    jt = _jittor()
    import numpy as np

    onehot = np.zeros(world_size(), dtype="float32")
    onehot[rank()] = 1.0 if flag else 0.0
    total = jt.array(onehot).mpi_all_reduce("add").numpy()
    return [int(r) for r in np.nonzero(total > 0.5)[0]]


def check_same_on_all_ranks(value, what):
    """Raise :class:`jboat.errors.ConfigError` unless ``value`` (an int) is equal on
    every rank; ``what`` names it in the message. One small all-reduce."""
    if not in_mpi():
        return
    jt = _jittor()
    import numpy as np

    value = int(value)
    stats = jt.array(np.array([value, value * value], dtype="float64"))
    total, total_sq = stats.mpi_all_reduce("add").numpy()
    n = world_size()
    if total != n * value or total_sq != n * value * value:
        from .errors import ConfigError

        raise ConfigError(
            f"data_parallel needs the same {what} on every rank; rank {rank()} has {value} "
            f"(the {n} ranks sum to {int(total)}). Give each rank the same number of tasks, "
            f"each with its shard of the data.")


# -- how Problem reduces ---------------------------------------------------------------------
def parallel_mode(config, batched):
    """``None`` outside MPI, else ``"data"``, ``"task"`` or ``"replica"`` (module docstring).

    Args:
        config: the normalised solver config (reads ``data_parallel``).
        batched: whether the feeds are task lists (``accumulate_grad`` /
            ``fogm_batch_input``).
    """
    if not in_mpi():
        return None
    if config.get("data_parallel"):
        return "data"
    return "task" if batched else "replica"


def data_parallel_reduction(config):
    """The reduction operators apply to full-data quantities: :func:`mean_across_ranks`
    when ``data_parallel`` is on and Jittor runs under MPI, else None."""
    if config.get("data_parallel") and in_mpi():
        return mean_across_ranks
    return None


@contextlib.contextmanager
def local_batch_norm(models, mode):
    """Within the block, in the ``"task"`` and ``"replica"`` modes, Jittor's BatchNorm
    layers of ``models`` normalise with this rank's own batch statistics.

    Jittor's ``BatchNorm`` defaults to ``sync=True``: under MPI it averages the batch
    mean and variance across ranks. That is right for ``data_parallel`` (the ranks hold
    shards of one batch) and wrong when the ranks hold different tasks or problems: each
    task would be normalised with statistics mixed from other ranks' tasks, a different
    function from the one a single process computes (Conv4 MAML, meta-batch of 4 on 2
    ranks: a meta-gradient 59x off). The flags are restored on exit.
    """
    if mode not in ("task", "replica"):
        yield
        return
    jt = _jittor()
    switched, seen = [], set()
    for model in models:
        if not isinstance(model, jt.Module) or id(model) in seen:
            continue
        seen.add(id(model))
        for module in model.modules():
            if isinstance(module, jt.nn.BatchNorm) and getattr(module, "sync", False):
                module.sync = False
                switched.append(module)
    try:
        yield
    finally:
        for module in switched:
            module.sync = True


@contextlib.contextmanager
def no_implicit_optimizer_sync():
    """Within the block Jittor's optimizers do not all-reduce gradients nor broadcast
    parameters (they do when ``jt.in_mpi``); MPI operators still work.

    jboat reduces its gradient buffers explicitly before stepping.
    """
    if not launched_by_mpirun() or "jittor" not in sys.modules:
        yield
        return
    jt = _jittor()
    saved = jt.in_mpi
    jt.in_mpi = False
    try:
        yield
    finally:
        jt.in_mpi = saved


@contextlib.contextmanager
def watchdog(timeout):
    """Bound the time this rank may spend in the block under MPI.

    A rank whose peer died or took another path waits in a collective forever,
    holding Python's lock, so no Python-level timer can fire. ``faulthandler``'s
    watchdog thread does not need it: after ``timeout`` seconds it prints
    ``Timeout (h:mm:ss)!`` and the Python stack of every thread, then exits with
    code 1, and ``mpirun`` stops the other ranks. It replaces any
    ``faulthandler.dump_traceback_later`` the caller had armed. No-op outside MPI
    or with ``timeout`` None/0.
    """
    if not timeout or not launched_by_mpirun():
        yield
        return
    faulthandler.dump_traceback_later(float(timeout), repeat=False, file=sys.stderr,
                                      exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


# -- files ---------------------------------------------------------------------------------------
def save_checkpoint(obj, path):
    """Write ``obj`` (e.g. ``problem.state_dict()``) with ``jt.save`` on rank 0 only.

    Every rank must call it: rank 0 writes to a temporary file and renames it
    (a reader never sees half a file), then all ranks meet at a barrier, so any
    rank may :func:`load_checkpoint` right after. Returns ``path``.
    """
    jt = _jittor()
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    path = os.fspath(path)
    if is_main_process():
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        jt.save(obj, tmp)
        os.replace(tmp, path)
    barrier()
    return path


def load_checkpoint(path, problem=None):
    """``jt.load(path)`` on this rank; with ``problem``, also ``problem.load_state_dict``.

    Every rank can call it (each reads the shared file). Returns the loaded object.
    """
    state = _jittor().load(os.fspath(path))
    if problem is not None:
        problem.load_state_dict(state)
    return state


# -- process hooks (installed by ``import jboat`` under mpirun) --------------------------------
class _RankZeroFilter(logging.Filter):
    """Keeps every record on rank 0; on other ranks only ERROR and above."""

    def __init__(self, this_rank):
        super().__init__()
        self.this_rank = this_rank

    def filter(self, record):
        return self.this_rank == 0 or record.levelno >= logging.ERROR


_INSTALLED = set()


def _stop_now(code, why):
    try:
        sys.stderr.write(
            f"jboat: rank {_env_rank()} of {_env_world_size()} stopped on {why}. Exiting with "
            f"code {code} at once so that mpirun stops the other ranks instead of leaving "
            f"them waiting for this one (JBOAT_MPI_ABORT_ON_ERROR=0 keeps Python's normal "
            f"exit).\n")
        sys.stderr.flush()
        sys.stdout.flush()
    finally:
        os._exit(code)


def _abort_on_uncaught(previous):
    def hook(exc_type, exc, tb):
        try:
            previous(exc_type, exc, tb)
        finally:
            _stop_now(1, f"{exc_type.__name__}: {exc}")
    hook.jboat_abort_hook = True
    return hook


def _abort_on_failed_exit():
    # Jittor wraps sys.exit and records the code (jittor.hooks.exit_code); this runs
    # before Jittor's own exit handler, which would enter MPI_Finalize
    import jittor as jt

    code = getattr(getattr(jt, "hooks", None), "exit_code", None)
    if code is not None and code != 0:
        _stop_now(code if isinstance(code, int) and 0 < code < 256 else 1,
                  f"sys.exit({code!r})")


def install_process_hooks():
    """Under ``mpirun`` (idempotent; ``import jboat`` calls it): the rank-0 logging
    filter on the ``jboat`` logger and, once Jittor is imported, hooks that end a
    failing rank at once.

    Without them, a rank that raises (or calls ``sys.exit(1)``) runs Python's normal
    exit, which calls ``MPI_Finalize`` and waits there for ranks that themselves
    wait for it in a collective: the job hangs. The exception hook prints the
    traceback as before (it chains to the hook Jittor installs), then calls
    ``os._exit(1)``; ``mpirun`` sees the non-zero exit and stops the others.
    ``JBOAT_MPI_ABORT_ON_ERROR=0`` keeps Python's normal exit. Outside MPI nothing
    is installed.
    """
    if not launched_by_mpirun():
        return
    if "filter" not in _INSTALLED:
        _INSTALLED.add("filter")
        logging.getLogger("jboat").addFilter(_RankZeroFilter(_env_rank()))
    if ("exit" in _INSTALLED or "jittor" not in sys.modules
            or os.environ.get("JBOAT_MPI_ABORT_ON_ERROR", "1") == "0"):
        return
    # after Jittor's import: Jittor replaces sys.excepthook without chaining
    _INSTALLED.add("exit")
    if not getattr(sys.excepthook, "jboat_abort_hook", False):
        sys.excepthook = _abort_on_uncaught(sys.excepthook)
    import atexit

    atexit.register(_abort_on_failed_exit)
