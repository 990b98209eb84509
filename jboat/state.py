"""Snapshots of variables and optimizer state: in memory (NaN guard) and as plain data
(checkpoints written with ``jt.save``)."""

import numpy as np
import jittor as jt

__all__ = ["snapshot_vars", "restore_vars", "optimizer_state", "optimizer_state_vars",
           "load_optimizer_state",
           "map_tree", "to_numpy_tree", "to_var_tree", "clone_tree"]

#: per-parameter state lists that Jittor's optimizers keep in each param group
_GROUP_STATE_KEYS = ("values", "m", "grads")


def snapshot_vars(variables):
    """Detached handles on the current values: no copy is made. Jittor's updates
    (``Var.update``/``assign``, optimizer steps) rebind a Var to a new node, so these
    handles keep the values of this moment."""
    return [v.detach() for v in variables]


def restore_vars(variables, values):
    """Write ``values`` back into ``variables`` in place (same Var objects)."""
    for var, value in zip(variables, values):
        if isinstance(value, np.ndarray):
            value = jt.array(value)
        var.update(value.detach())


def optimizer_state(opt):
    """The mutable state of a ``jittor.optim`` optimizer: step count, learning rates
    and every per-parameter state list (momentum buffers, Adam moments)."""
    groups = []
    for group in opt.param_groups:
        entry = {"lr": group.get("lr")}
        for key in _GROUP_STATE_KEYS:
            if key in group:
                entry[key] = snapshot_vars(group[key])
        groups.append(entry)
    return {"n_step": getattr(opt, "n_step", 0), "lr": getattr(opt, "lr", None), "groups": groups}


def optimizer_state_vars(opt):
    """The Vars of an optimizer's per-parameter state (momentum buffers, moments)."""
    return [v for group in opt.param_groups for key in _GROUP_STATE_KEYS
            for v in group.get(key, ()) if isinstance(v, jt.Var)]


def load_optimizer_state(opt, state):
    """Inverse of :func:`optimizer_state` (accepts Vars or numpy arrays)."""
    if len(state["groups"]) != len(opt.param_groups):
        raise ValueError("The optimizer state has a different number of parameter groups "
                         "than this optimizer; build the optimizers as in the saved run.")
    opt.n_step = state["n_step"]
    if state.get("lr") is not None:
        opt.lr = state["lr"]
    for group, saved in zip(opt.param_groups, state["groups"]):
        if saved.get("lr") is not None:
            group["lr"] = saved["lr"]
        elif "lr" in group:
            del group["lr"]
        for key in _GROUP_STATE_KEYS:
            if key in saved:
                if key not in group:
                    group[key] = [jt.zeros(p.shape, p.dtype).stop_grad() for p in group["params"]]
                restore_vars(group[key], saved[key])


def map_tree(leaf_type, fn, obj):
    """Apply ``fn`` to every ``leaf_type`` leaf of nested lists/tuples/dicts."""
    if isinstance(obj, leaf_type):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tree(leaf_type, fn, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tree(leaf_type, fn, v) for v in obj)
    return obj


def to_numpy_tree(obj):
    """Replace every Var in nested containers by a numpy array."""
    return map_tree(jt.Var, lambda v: v.numpy().copy(), obj)


def to_var_tree(obj):
    """Replace every numpy array in nested containers by a stop-grad Var."""
    return map_tree(np.ndarray, lambda a: jt.array(a).stop_grad(), obj)


def clone_tree(obj):
    """Snapshot every Var in nested containers (values survive later in-place updates)."""
    return map_tree(jt.Var, lambda v: v.clone().detach(), obj)
