"""Small helpers shared by the NA operators (no maths of their own).

* which fast-weight entries are lower-level variables (``ll_var``),
* how many LL steps lie before the evaluation point (the GDA weight ``α_k`` of
  operators.md §0.2),
* whether the chain records the differentiable trajectory (pre-operators that
  only act on the trajectory warn when nothing records it).
"""

import logging

from ..operation_registry import get_registered_operation

__all__ = ["lower_level_positions", "trainable_entries", "evaluation_step",
           "trajectory_is_tracked", "warn_without_trajectory"]

logger = logging.getLogger("jboat")


def lower_level_positions(ll_model, ll_var):
    """Indices into ``ll_model.parameters()`` of the ``ll_var`` entries.

    Fast weights are aligned with ``ll_model.parameters()``; implicit and
    finite-difference operators work on the lower-level variables only. Entries of
    ``ll_var`` that are not parameters of the model are ignored; if none is found,
    every parameter counts (``ll_var`` given in another form).
    """
    params = list(ll_model.parameters())
    index_of = {id(p): i for i, p in enumerate(params)}
    positions = [index_of[id(v)] for v in ll_var if id(v) in index_of]
    return positions if positions else list(range(len(params)))


def trainable_entries(params, positions):
    """``(positions, vars)`` of the entries of ``params`` that carry gradients."""
    kept = [i for i in positions if not params[i].is_stop_grad()]
    return kept, [params[i] for i in kept]


def evaluation_step(max_loss_iter, kwargs, lower_iters):
    """Number of LL steps taken up to the evaluation point ``y_sel``.

    Under PTT (``max_loss_iter >= 1``) it is ``T + k*``, with ``T`` the steps an
    RGT truncation took before the recorded history started (passed on as
    ``truncated_steps``); otherwise every one of the ``K`` steps.
    """
    if max_loss_iter is not None and max_loss_iter > 0:
        return int(kwargs.get("truncated_steps", 0)) + int(max_loss_iter)
    return int(lower_iters)


def trajectory_is_tracked(config):
    """True when a selected operator makes the inner loop record the trajectory."""
    names = list(config.get("gm_op") or ()) + list(config.get("na_op") or ())
    return any(getattr(get_registered_operation(n), "tracks_trajectory", False)
               for n in names)


def warn_without_trajectory(name, effect, config):
    """Log (at construction) that ``name`` has no effect in this chain."""
    if not trajectory_is_tracked(config):
        logger.warning(
            "%s has no effect with na_op %s: it %s, but no selected operator "
            "differentiates through the lower-level trajectory (add PTT, or use RAD or "
            "IAD as the terminal operator, or remove %s).",
            name, list(config.get("na_op") or ()), effect, name)
