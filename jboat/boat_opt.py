"""``Problem``: a thin orchestrator of the bilevel solver (no maths here)."""

import collections
import gc
import json
import logging
import time

import jittor as jt
import numpy as np

from . import distributed, higher_jit
from .higher_jit import fusion
from .config import normalize_config
from .errors import ConfigError, ConfigTypeError
from .gm_ol.sequential_ds import makes_functional_dynamical_system
from .losses import load_loss_function, load_losses
from .na_ol.sequential_hg import makes_functional_na_operation
from .operation_registry import get_registered_operation
from .plan import build_plan
from .state import (clone_tree, load_optimizer_state, optimizer_state, optimizer_state_vars,
                    restore_vars, snapshot_vars, to_numpy_tree, to_var_tree)
from .utils.modules import warn_unregistered_modules
from .utils.op_utils import (apply_custom_grads, clear_custom_grads, copy_parameter_from_list,
                             read_custom_grads, update_tensor_grads)

__all__ = ["Problem", "_load_loss_function"]

logger = logging.getLogger("jboat")

_load_loss_function = load_loss_function

#: most records kept in ``loss_history`` and ``_log_results``
MAX_HISTORY = 10000


_CUDA_CHECKED = {}


def cuda_computes():
    """Whether one tiny CUDA kernel gives the right answer (checked once per process).

    Jittor 1.3.11 built against CUDA 13 compiles and launches its kernels without any
    error and returns wrong values (inputs unchanged, or uninitialised memory): a
    hyper-gradient computed there would be silently wrong."""
    if not jt.has_cuda:
        return False
    if "ok" not in _CUDA_CHECKED:
        previous = jt.flags.use_cuda
        try:
            jt.flags.use_cuda = 1
            out = (jt.array(np.array([1.0, 2.0, 3.0], dtype=np.float32)) + 1.0).numpy()
            _CUDA_CHECKED["ok"] = bool(np.allclose(out, [2.0, 3.0, 4.0]))
        except RuntimeError:
            _CUDA_CHECKED["ok"] = False
        finally:
            jt.flags.use_cuda = previous
    return _CUDA_CHECKED["ok"]


class Problem:
    """A bilevel problem and its solver.

    Args:
        config: solver config (dict from YAML/JSON plus the runtime objects
            ``lower_level_model``, ``upper_level_model``, ``lower_level_var``,
            ``upper_level_var``, ``lower_level_opt``, ``upper_level_opt``). It is
            validated here and never modified; the normalised copy is
            ``self.boat_configs``.
        loss_config: ``{"lower_level_loss": ..., "upper_level_loss": ...,
            "gda_loss": ...}`` entries (dotted path + params, or callables).

    Raises:
        ConfigError, ConfigTypeError, MissingConfigKeyError: invalid configuration,
            with a message naming the key and the fix.

    Under ``mpirun`` (see :mod:`jboat.distributed`): the variables and both models'
    parameters are broadcast from rank 0 when the Problem is built; after the
    tasks of an iteration the UL buffers (and DI's LL buffers) are summed across
    ranks (task lists: ``accumulate_grad`` / ``fogm_batch_input``) or averaged
    (``data_parallel``, or neither), so every rank takes the same steps; only rank 0
    writes ``loss_log_path``; one ``run_iter`` is bounded by ``mpi_timeout``.
    """

    def __init__(self, config, loss_config):
        cfg = normalize_config(config)
        gm_ops = cfg["gm_op"] or []
        losses = load_losses(loss_config, need_gda="GDA" in gm_ops)
        cfg["gda_loss"] = losses.get("gda_loss")
        self.boat_configs = cfg
        self.boat_config = cfg
        self._fo_op = cfg["fo_op"]
        self._gm_op = cfg["gm_op"]
        self._na_op = cfg["na_op"]
        self._lower_opt = cfg["lower_level_opt"]
        self._upper_opt = cfg["upper_level_opt"]
        self._ll_model = cfg["lower_level_model"]
        self._ul_model = cfg["upper_level_model"]
        self._ll_var = list(cfg["lower_level_var"])
        self._ul_var = list(cfg["upper_level_var"])
        warn_unregistered_modules(self._ll_model, "lower_level_model", self._ll_var)
        warn_unregistered_modules(self._ul_model, "upper_level_model", self._ul_var)
        self._lower_loop = cfg["lower_iters"]
        self._ll_loss = losses["lower_level_loss"]
        self._ul_loss = losses["upper_level_loss"]
        self._ll_solver = None
        self._ul_solver = None
        self._lower_init_opt = None
        self._fo_op_solver = None
        self._log_results = collections.deque(maxlen=MAX_HISTORY)
        self.loss_history = collections.deque(maxlen=MAX_HISTORY)
        self.loss_log_path = cfg["loss_log_path"]
        self._track_opt_traj = False
        #: fusion barrier level (jboat.higher_jit.fusion); raised when Jittor fails to
        #: compile one of the iteration's fused kernels
        self._fusion_level = 0
        selected = [self._fo_op] if self._fo_op else gm_ops + self._na_op
        self._operator_classes = [get_registered_operation(n) for n in selected]
        # single-loop solvers update the LL variables themselves; a model holding
        # meta-parameters must keep them
        self._copy_last_param = cfg["copy_last_param"] and not any(
            getattr(c, "keeps_lower_model", False) for c in self._operator_classes)
        self._apply_device(cfg["device"])
        batched = cfg["fogm_batch_input"] if self._fo_op else cfg["accumulate_grad"]
        #: None outside MPI, else "task", "data" or "replica" (jboat.distributed)
        self._parallel = distributed.parallel_mode(cfg, batched)
        if self._parallel is not None:
            # ranks must start from the same point; later steps keep them equal
            with distributed.watchdog(cfg["mpi_timeout"]):
                distributed.broadcast_vars(self._tracked_vars(), root=0)
        self._plan = None if self._fo_op else build_plan(
            cfg, self._operator_classes, self._ll_loss,
            reduce=distributed.data_parallel_reduction(cfg))
        #: some operator differentiates gradients (or a recorded trajectory with its
        #: second-order terms): the models' layers run twice-differentiable code
        self._second_order = (
            any(c.needs_second_order(cfg) for c in self._operator_classes)
            or (self._plan is not None and self._plan.record and not self._plan.first_order))

    # -- set-up --------------------------------------------------------------------------
    @staticmethod
    def _apply_device(device):
        if device == "cuda":
            if not jt.has_cuda:
                raise ConfigError("device: cuda was requested but Jittor found no usable "
                                  "CUDA (driver and nvcc); use device: cpu or install CUDA.")
            if not cuda_computes():
                raise ConfigError(
                    "device: cuda was requested but Jittor's CUDA kernels return wrong values "
                    "on this machine ([1, 2, 3] + 1 did not give [2, 3, 4]); seen with "
                    "Jittor 1.3.11 on CUDA 13. Use a CUDA 12.x toolkit, or device: cpu "
                    "(docs/user_guide.md, 'Install').")
            jt.flags.use_cuda = 1
        elif device == "cpu":
            jt.flags.use_cuda = 0

    def set_track_trajectory(self, track_traj=True):
        """Keep the differentiable history of fast weights in the inner loop."""
        self._track_opt_traj = bool(track_traj)

    def check_status(self):
        """Switch trajectory tracking on where an NA operator needs it.

        Combination rules are validated once, when the Problem is constructed.
        """
        if self._plan is not None and self._plan.record:
            self.set_track_trajectory(True)

    def _operator_kwargs(self):
        return dict(ll_objective=self._ll_loss, ul_objective=self._ul_loss,
                    ll_model=self._ll_model, ul_model=self._ul_model,
                    solver_config=self.boat_configs, plan=self._plan)

    def build_ll_solver(self, *unused):
        """Build the lower-level solver (GM chain, or the FO operator). Returns self."""
        self._materialize()
        if self._fo_op is not None:
            self._fo_op_solver = get_registered_operation(self._fo_op)(
                lower_loop=self._lower_loop, ll_var=self._ll_var, ul_var=self._ul_var,
                **self._operator_kwargs())
            return self
        self.check_status()
        self._ll_solver = makes_functional_dynamical_system(
            custom_order=self._gm_op, lower_loop=self._lower_loop, **self._operator_kwargs())
        if self._plan.learn_init:
            lr = self._plan.init_lr
            if lr is None:
                lr = self._upper_opt.lr
            self._lower_init_opt = type(self._upper_opt)(self._ll_var, lr=float(lr))
        return self

    def _materialize(self):
        """Execute the variables, buffers and optimizer state once, before any iteration.

        Freshly built weights are often still lazy (``jt.array(...) * scale``, a
        ``float64()`` cast, an optimizer's zero buffers). Jittor then fuses their
        creation into the first iteration's kernels, and the snapshots that
        ``run_iter`` keeps for a roll-back point into that graph: when Jittor fails to
        compile one of those fused kernels, restoring the snapshots would run the
        failing kernel again and the fusion-barrier rerun could not recover. Executed
        once here, every snapshot is a plain stored value. One host synchronisation
        per build; nothing is copied."""
        pending = list(self._tracked_vars())
        for opt in self._optimizers().values():
            if opt is not None:
                pending.extend(optimizer_state_vars(opt))
        if pending:
            jt.sync(pending)

    def build_ul_solver(self, *unused):
        """Build the hyper-gradient chain (none for single-loop solvers). Returns self."""
        if self._fo_op is not None or any(getattr(c, "computes_upper_gradient", False)
                                           for c in self._operator_classes):
            self._ul_solver = None
            return self
        self._ul_solver = makes_functional_na_operation(
            custom_order=self._na_op, ll_var=self._ll_var, ul_var=self._ul_var,
            **self._operator_kwargs())
        return self

    # -- one iteration -------------------------------------------------------------------------
    def run_iter(self, ll_feed_dict, ul_feed_dict, current_iter):
        """One upper-level iteration.

        Returns:
            ``(results, run_time)`` — the records produced by this call and the
            iteration's wall time in seconds — or, with ``return_grad``,
            ``(grads, run_time)`` with ``grads`` aligned with ``upper_level_var``
            (this iteration's hyper-gradient; zeros where a variable received none).
            ``run_time`` includes Jittor's (lazy) execution of the iteration, first-use
            kernel compilation included: the clock stops after the iteration's one
            host synchronisation, which also waits for the updated variables.
        """
        if self._ll_solver is None and self._fo_op_solver is None:
            raise ConfigError("Call build_ll_solver() and build_ul_solver() before run_iter().")
        if not isinstance(current_iter, int) or isinstance(current_iter, bool):
            raise ConfigTypeError(f"current_iter must be an int, got {current_iter!r}.")
        cfg = self.boat_configs
        batched = cfg["fogm_batch_input"] if self._fo_op else cfg["accumulate_grad"]
        pairs = self._feed_pairs(ll_feed_dict, ul_feed_dict, batched)
        # handles on the current values (no copies): the NaN guard's roll-back, and the
        # rerun of an iteration whose fused kernels Jittor failed to compile
        saved = self._capture_state()
        check = cfg["nan_guard"]
        with distributed.watchdog(cfg["mpi_timeout"] if self._parallel else None), \
                distributed.local_batch_norm((self._ll_model, self._ul_model), self._parallel):
            while True:
                try:
                    start = time.perf_counter()
                    if self._fusion_level:
                        fusion.execute_inputs(pairs)
                    with higher_jit.second_order_layers(self._second_order), \
                            fusion.fusion_barriers(self._fusion_level):
                        output, records, pending = self._iterate(pairs, current_iter, batched)
                        # the iteration's one host synchronisation: NaN check, loss
                        # record, results, and the updated variables (so that the clock
                        # sees the work)
                        values = self._read_back(pending, check=check)
                    run_time = time.perf_counter() - start
                    break
                except FloatingPointError:
                    if check:
                        self._restore_state(saved)
                    raise
                except RuntimeError as exc:
                    if not fusion.is_compile_failure(exc):
                        raise
                    if self._fusion_level >= fusion.MAX_LEVEL:
                        try:   # leave the problem as it was before the iteration
                            self._restore_state(saved)
                        except RuntimeError:
                            pass
                        raise
                # outside the handler: the traceback, and with it the failed graph, is
                # gone, so restoring does not execute the kernel that failed again
                self._rerun_with_barriers(saved)
            self._log_results.extend(records)
            if values["losses"] is not None:
                self.save_losses(current_iter, *values["losses"])
        return output, run_time

    def _rerun_with_barriers(self, saved):
        """After Jittor failed to compile a fused kernel of this iteration: drop what
        the failed attempt built, restore the state and raise the fusion-barrier level."""
        gc.collect()
        self._restore_state(saved)
        self._fusion_level += 1
        logger.warning(
            "Jittor generated a fused kernel it could not compile; jboat reruns the "
            "iteration with fusion barriers (level %d, kept from now on: same values, %s). "
            "See jboat.higher_jit.fusion.", self._fusion_level,
            "kernels cut at layer inputs and outputs" if self._fusion_level == 1
            else "no fusion at all, slower")

    def _iterate(self, pairs, current_iter, batched):
        """Run the tasks, reduce, take the DI and UL steps. Nothing is read back:
        the returned ``pending`` lists the scalars :meth:`_read_back` reads at once."""
        cfg = self.boat_configs
        clear_custom_grads(self._ul_var)
        clear_custom_grads(self._ll_var)
        records, step_losses = [], []
        if self._parallel == "data":   # every rank must run the same collectives
            distributed.check_same_on_all_ranks(len(pairs), "number of tasks per iteration")
        if self._fo_op is not None:
            for ll_fd, ul_fd in pairs:
                grads = self._fo_op_solver.optimize(ll_fd, ul_fd, current_iter)
                records.append(self._write_gradients(grads))
        else:
            for task, (ll_fd, ul_fd) in enumerate(pairs):
                losses = []
                step_losses.append(losses)
                task_records = self._run_task(ll_fd, ul_fd, current_iter, losses,
                                              copy_last=self._copy_last_param and not batched)
                records.extend(task_records)
                if len(pairs) > 1:
                    self._execute_task(losses, task_records)
        if self._parallel is not None:
            distributed.all_reduce_buffers(
                self._ul_var + (self._ll_var if self._lower_init_opt is not None else []),
                op="sum" if self._parallel == "task" else "mean")
        pending = {"records": records, "checks": [], "losses": None}
        if cfg["nan_guard"]:   # before the steps consume the buffers
            pending["checks"] = self._finite_checks(step_losses, records)
        if self._tracks_losses():
            pending["losses"] = self._loss_record(pairs, step_losses, records)
        if self._lower_init_opt is not None:
            apply_custom_grads(self._lower_init_opt, self._ll_var)
        if cfg["return_grad"]:
            output = [g.detach() for g in read_custom_grads(self._ul_var)]
            clear_custom_grads(self._ul_var)
        else:
            apply_custom_grads(self._upper_opt, self._ul_var)
            output = records
            if cfg["nan_guard"]:
                # under MPI the UL variables are equal on every rank: no agreement needed
                pending["checks"] += [("UL step (upper-level variables after the optimizer "
                                       "step)", v.sum()) for v in self._ul_var]
        pending["outputs"] = [v for v in output if isinstance(v, jt.Var)]
        return output, records, pending

    def _read_back(self, pending, check):
        """One host read of every pending scalar, in the same execution pass as the
        iteration's updated variables and returned gradients. Raises ``FloatingPointError``
        (before anything is recorded) when a checked value is not finite; the caller
        rolls back. Fills the records' Var entries with floats; returns the
        ``(ll_loss, ul_loss)`` of the loss record under ``"losses"``."""
        slots = []   # (dict, key) of record entries still holding a Var
        for entry in _record_entries(pending["records"]):
            slots += [(entry, k) for k, v in entry.items() if isinstance(v, jt.Var)]
        checks = pending["checks"] if check else []
        losses = list(pending["losses"] or ())
        scalars = [v for _, v in checks] + losses + [entry[k] for entry, k in slots]
        values = _read_scalars(scalars, also=self._tracked_vars() + pending["outputs"])
        if check:
            _raise_first_nonfinite([name for name, _ in checks], values[:len(checks)],
                                   agree=self._parallel is not None)
        values = values[len(checks):]
        for i, (entry, key) in enumerate(slots):
            entry[key] = float(values[len(losses) + i])
        return {"losses": tuple(float(v) for v in values[:len(losses)]) if losses else None}

    # -- NaN guard -------------------------------------------------------------------------------
    def _finite_checks(self, step_losses, records):
        """``(stage name, scalar)`` pairs, in the order the stages ran: every LL step
        loss, the UL losses, the gradients. (Holding a step's loss makes Jittor compute
        its value, a few small kernels per step the inner loop itself does not need:
        the guard's main cost.)"""
        named = []
        for task, losses in enumerate(step_losses):
            where = f" of task {task}" if len(step_losses) > 1 else ""
            named += [(f"LL step {k}{where} (lower-level loss)", loss)
                      for k, loss in enumerate(losses)]
        stage = (f"first-order operator {self._fo_op}" if self._fo_op else
                 f"hyper-gradient operator {'+'.join(self._gm_op + self._na_op)}")
        named += [(f"{stage} (upper-level loss)", entry["upper_loss"])
                  for entry in _record_entries(records) if "upper_loss" in entry]
        named += [(f"{stage} (hyper-gradient)", g.sum()) for g in read_custom_grads(self._ul_var)]
        if (self._lower_init_opt is not None or self._fo_op is not None
                or self._ul_solver is None):   # DI buffers, or LL variables updated by the operator
            named += [(f"{stage} (lower-level variables / their gradients)", g.sum())
                      for g in read_custom_grads(self._ll_var) + self._ll_var]
        return named

    def _stateful_operators(self):
        ops = []
        for chain in (self._ll_solver, self._ul_solver):
            if chain is not None:
                ops += chain.gradient_instances
        if self._fo_op_solver is not None:
            ops.append(self._fo_op_solver)
        return ops

    def _tracked_vars(self):
        seen, out = set(), []
        for var in (self._ul_var + self._ll_var + list(self._ll_model.parameters())
                    + list(self._ul_model.parameters())):
            if id(var) not in seen:
                seen.add(id(var))
                out.append(var)
        return out

    def _optimizers(self):
        return {"upper": self._upper_opt, "lower": self._lower_opt,
                "initialization": self._lower_init_opt}

    def _capture_state(self):
        variables = self._tracked_vars()
        return {"vars": (variables, snapshot_vars(variables)),
                "optimizers": {k: optimizer_state(o) for k, o in self._optimizers().items()
                               if o is not None},
                "operators": [clone_tree(op.state_dict()) for op in self._stateful_operators()]}

    def _restore_state(self, saved):
        variables, values = saved["vars"]
        restore_vars(variables, values)
        for key, state in saved["optimizers"].items():
            load_optimizer_state(self._optimizers()[key], state)
        for op, state in zip(self._stateful_operators(), saved["operators"]):
            op.load_state_dict(state)
        clear_custom_grads(self._ul_var)
        clear_custom_grads(self._ll_var)

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self):
        """Everything a resumed run needs, as plain data (numpy arrays), for ``jt.save``.

        Holds the upper and lower variables (and both models' parameters), every
        optimizer's state (UL, LL, DI: step counts, moments, momentum buffers,
        learning rates), each operator's state and the loss history.
        """
        state = self._capture_state()
        variables, values = state["vars"]
        return to_numpy_tree({
            "format": "jboat.Problem/1",
            "operators_selected": [c.__name__ for c in self._operator_classes],
            "variables": values,
            "optimizers": state["optimizers"],
            "operators": state["operators"],
            "loss_history": list(self.loss_history),
        })

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict` (e.g. from ``jt.load``) into this Problem.

        The Problem must be built the same way (same config, models and optimizers).
        """
        if not isinstance(state, dict) or state.get("format") != "jboat.Problem/1":
            raise ValueError("Not a jboat Problem state: pass what Problem.state_dict() "
                             "returned (or jt.load of a file saved with jt.save).")
        selected = [c.__name__ for c in self._operator_classes]
        if state["operators_selected"] != selected:
            raise ValueError(f"The checkpoint was made with operators {state['operators_selected']} "
                             f"but this Problem uses {selected}; build the same solver config.")
        variables = self._tracked_vars()
        if len(state["variables"]) != len(variables) or any(
                tuple(v.shape) != tuple(np.shape(s)) for v, s in zip(variables, state["variables"])):
            raise ValueError("The checkpoint's variables do not match this Problem's models "
                             "(count or shapes differ).")
        restore_vars(variables, state["variables"])
        for key, saved in state["optimizers"].items():
            opt = self._optimizers().get(key)
            if opt is None:
                raise ValueError(f"The checkpoint has a '{key}' optimizer this Problem lacks.")
            load_optimizer_state(opt, to_var_tree(saved))
        for op, saved in zip(self._stateful_operators(), state["operators"]):
            op.load_state_dict(to_var_tree(saved))
        self.loss_history.clear()
        self.loss_history.extend(state["loss_history"])

    @staticmethod
    def _feed_pairs(ll_feed_dict, ul_feed_dict, batched):
        if not batched:
            return [(ll_feed_dict, ul_feed_dict)]
        if not isinstance(ll_feed_dict, (list, tuple)) or not isinstance(ul_feed_dict, (list, tuple)):
            raise ConfigTypeError("With accumulate_grad / fogm_batch_input the feeds must be "
                                  "lists of per-task dicts (one LL and one UL dict per task).")
        if len(ll_feed_dict) != len(ul_feed_dict) or not ll_feed_dict:
            raise ConfigError(f"Got {len(ll_feed_dict)} LL feeds and {len(ul_feed_dict)} UL "
                              f"feeds; pass one pair per task (at least one).")
        return list(zip(ll_feed_dict, ul_feed_dict))

    def _run_task(self, ll_feed_dict, ul_feed_dict, current_iter, step_losses, copy_last):
        solver = self._ll_solver
        with higher_jit.innerloop_ctx(self._ll_model, self._lower_opt,
                                      copy_initial_weights=False,
                                      track_higher_grads=self._track_opt_traj,
                                      second_order=self._second_order) as (aux_model, aux_opt):
            if self._parallel == "data":   # full-data step gradients, differentiably
                aux_opt.gradient_reduction = distributed.mean_across_ranks
            trajectory = solver.run(ll_feed_dict, ul_feed_dict, aux_model, aux_opt,
                                    step_losses=step_losses)
            key = f"dynamic_results_{len(solver.gradient_instances) - 1}"
            records = [{key: -1 if trajectory is None else trajectory.record}]
            if self._ul_solver is None:   # a single-loop solver: its own UL gradient
                weights = None if trajectory is None else trajectory.params()
                grads = solver.gradient_instances[-1].optimize(
                    ll_feed_dict, ul_feed_dict, current_iter, weights=weights,
                    step_losses=step_losses)
                records.append(self._write_gradients(grads))
            else:
                grads = self._ul_solver.hypergradient(trajectory, ll_feed_dict, ul_feed_dict)
                record = self._write_gradients(grads)
                record["hyper_gradient_finished"] = True
                records.append({"gradient_operator_results": record})
            if copy_last:
                copy_parameter_from_list(self._ll_model, aux_model.parameters(time=-1))
        return records

    def _execute_task(self, losses, task_records):
        """Run one task's graph of a meta-batch before the next task's is built (one
        execution pass, no read-back): the task's activations are freed then, so the
        tensors alive at any time are one task's, whatever the meta-batch size, by
        construction rather than by Jittor's scheduling (on bench/bench_conv4.py's Conv4
        the resident peak also fell, by up to 20 %, at the same speed). Under
        ``data_parallel`` this also orders the collectives: every rank runs this task's
        before the next task's."""
        scalars = [entry["upper_loss"] for entry in _record_entries(task_records)
                   if isinstance(entry.get("upper_loss"), jt.Var)]
        jt.sync(read_custom_grads(self._ul_var + self._ll_var) + list(losses) + scalars)

    def _write_gradients(self, grads):
        """Add :class:`jboat.plan.HyperGrads` to the buffers (UL, and the LL variables'
        under a learned initialisation); set a solver-owned UL learning rate. Returns
        the record ``{"upper_loss": ...}``."""
        update_tensor_grads(self._ul_var, grads.upper)
        if grads.initial:
            update_tensor_grads([var for var, _ in grads.initial], [g for _, g in grads.initial])
        if grads.upper_lr is not None:
            for group in self._upper_opt.param_groups:
                group["lr"] = grads.upper_lr
        loss = grads.upper_loss
        return {"upper_loss": loss.detach() if isinstance(loss, jt.Var) else loss}

    # -- losses ----------------------------------------------------------------------------------
    def _tracks_losses(self):
        return bool(self.loss_log_path) or self.boat_configs["track_losses"]

    def _loss_record(self, pairs, step_losses, records):
        """``[ll_loss, ul_loss]`` as Vars, from what the iteration computed: the
        objective of the last LL step and the UL loss of the hyper-gradient (means
        over this process's tasks; under ``data_parallel`` over all ranks). FO
        operators, which record no LL step, evaluate both on the real models."""
        ll = [losses[-1] for losses in step_losses if losses]
        ul = [entry["upper_loss"] for entry in _record_entries(records)
              if isinstance(entry.get("upper_loss"), jt.Var)]
        if not ll or not ul:
            ll, ul = self.evaluate_losses(*pairs[0], read=False)
            ll, ul = [ll], [ul]
        values = [_mean(ll), _mean(ul)]
        if self._parallel == "data":   # the full-data losses, on every rank
            values = distributed.mean_across_ranks(values)
        return [v.detach() for v in values]

    def evaluate_losses(self, ll_feed_dict, ul_feed_dict, read=True):
        """``(f, F)``: the LL and UL losses of the current models on these feeds, without
        gradients (floats; Vars with ``read=False``). ``loss_history`` records the
        losses the iterations computed; call this for the values after the steps. Under
        ``data_parallel`` these are this process's shard losses."""
        with jt.no_grad():
            ll_loss = self._ll_loss(ll_feed_dict, self._ul_model, self._ll_model)
            ul_loss = self._ul_loss(ul_feed_dict, self._ul_model, self._ll_model)
        if not read:
            return ll_loss, ul_loss
        return tuple(float(v) for v in _read_scalars([ll_loss, ul_loss]))

    def save_losses(self, current_iter, ll_loss, ul_loss):
        """Append a loss record; rewrite ``loss_log_path`` as JSON when it is set
        (under MPI on rank 0 only)."""
        self.loss_history.append({"iter": current_iter, "ll_loss": ll_loss, "ul_loss": ul_loss})
        if self.loss_log_path and distributed.is_main_process():
            with open(self.loss_log_path, "w", encoding="utf-8") as handle:
                json.dump(list(self.loss_history), handle)

    def plot_losses(self, path=None):
        """Save a two-panel loss curve (needs matplotlib). Returns the file path."""
        import os

        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("plot_losses needs matplotlib: pip install "
                              "'jboat[examples]'.") from exc
        if path is None:
            base = os.path.dirname(self.loss_log_path) if self.loss_log_path else "."
            path = os.path.join(base, "loss_curve.png")
        history = list(self.loss_history)
        iters = [r["iter"] for r in history]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, title in zip(axes, ("ll_loss", "ul_loss"), ("LL loss", "UL loss")):
            ax.plot(iters, [r[key] for r in history])
            ax.set_xlabel("iteration")
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path


def _mean(values):
    return values[0] if len(values) == 1 else sum(values[1:], values[0]) / len(values)


def _record_entries(records):
    """Each record and the dicts nested in it (e.g. ``gradient_operator_results``)."""
    for record in records:
        yield record
        yield from (v for v in record.values() if isinstance(v, dict))


def _read_scalars(scalars, also=()):
    """One host synchronisation for a list of scalar Vars (or numbers): one execution
    pass (``jt.sync``, which also computes the Vars in ``also``, read by nobody), then
    copies of the computed values (a concatenation would cost a kernel per entry).
    Returns a float32 numpy array."""
    pending = [v for v in scalars if isinstance(v, jt.Var)] + list(also)
    if pending:
        jt.sync(pending)
    return np.array([v.numpy().reshape(-1)[0] if isinstance(v, jt.Var) else v
                     for v in scalars], dtype=np.float32).reshape(-1)


def _raise_first_nonfinite(names, values, agree=False):
    """Raise ``FloatingPointError`` naming the first entry whose value is not finite.

    With ``agree`` (under MPI) every rank raises when any rank found one (one small
    all-reduce), so that all ranks roll back together.
    """
    finite = np.isfinite(values)
    failing = distributed.ranks_where(not finite.all()) if agree else []
    advice = ("Lower the learning rates, check the data, or set nan_guard: false to skip "
              "this check.")
    if finite.all():
        if failing:
            raise FloatingPointError(
                f"Non-finite value on rank(s) {failing} (see the error there); the iteration "
                f"was rolled back on every rank. {advice}")
        return
    first = int(np.argmin(finite))
    where = f" on rank {distributed.rank()}" if agree else ""
    raise FloatingPointError(
        f"Non-finite value at {names[first]}{where}; the iteration was rolled back "
        f"(variables and optimizer states are as before it). {advice}")
