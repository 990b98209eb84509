"""Differentiable twins of Jittor's optimizers.

A differentiable optimizer computes the same update as its ``jittor.optim`` twin,
but out of place: every step returns a *new* list of fast weights, each a
differentiable function of the previous weights and of whatever the loss depends
on (when tracking). Nothing is updated in place, so every history entry keeps its
own value (Jittor's ``a -= b`` rebinds the handle and would alias the history).

Optimizer state (momentum buffers, Adam moments, step counts) starts fresh for
every inner loop; the real optimizer's state is not copied.
"""

import math

import jittor as jt

from .utils import grads_with_zeros

__all__ = [
    "DifferentiableOptimizer", "DifferentiableSGD", "DifferentiableAdam",
    "DifferentiableAdamW", "DifferentiableRMSprop", "get_diff_optim",
    "register_optim", "supported_optimizers",
]

_OPT_MAPPING = {}


class DifferentiableOptimizer:
    """Base class: group bookkeeping, gradient computation and history update.

    Args:
        other: the real ``jittor.optim.Optimizer`` whose hyper-parameters
            (per parameter group) are copied.
        reference_params: the module's parameters (``module.parameters()``) that
            the fast weights are aligned with.
        fmodel: the patched module whose history each step extends.
        grad_callback: default callable applied to the list of gradients.
        track_higher_grads: keep each step differentiable (else detach).

    Attributes:
        gradient_reduction: None, or a callable applied to the list of step
            gradients before the callback and the update (None entries kept), e.g.
            :func:`jboat.distributed.mean_across_ranks` for data parallelism. It
            must be differentiable when the steps are tracked.
    """

    #: hyper-parameter names with their defaults (read per group, then optimizer)
    hyperparameters = {}

    def __init__(self, other, reference_params, fmodel=None, device=None, override=None,
                 grad_callback=None, track_higher_grads=True, **kwargs):
        if override:
            raise NotImplementedError("override of optimizer hyper-parameters is not "
                                      "supported; configure the real optimizer instead.")
        reference_params = list(reference_params)
        index_of = {id(p): i for i, p in enumerate(reference_params)}
        self.param_groups = []
        for group in other.param_groups:
            indices = []
            for p in group["params"]:
                if id(p) not in index_of:
                    raise ValueError("A parameter of the optimizer is not among the "
                                     "module's parameters; build the lower-level "
                                     "optimizer from lower_level_model.parameters().")
                indices.append(index_of[id(p)])
            settings = {name: group.get(name, getattr(other, name, default))
                        for name, default in self.hyperparameters.items()}
            settings["lr"] = group.get("lr", other.lr)
            self.param_groups.append({"indices": indices, **settings})
        self._stepped = sorted({i for group in self.param_groups for i in group["indices"]})
        self.state = {}
        self.fmodel = fmodel
        self._grad_callback = grad_callback
        self._track_higher_grads = track_higher_grads
        self.gradient_reduction = None

    def step(self, loss, params=None, override=None, grad_callback=None, record=True,
             **kwargs):
        """Take one step on ``loss`` and return the new fast weights.

        Args:
            loss: scalar Var computed with the current fast weights.
            params: the weights to differentiate and update (default: the
                patched model's latest fast weights).
            grad_callback: callable on the gradient list (wins over the default),
                e.g. ``jboat.utils.stop_grads`` for first-order methods.
            record: append the result to the patched model's history.
        """
        if params is None:
            if self.fmodel is None:
                raise ValueError("step() needs params= when the optimizer has no "
                                 "patched model.")
            params = self.fmodel.fast_params
        params = list(params)
        # only the entries some param group steps: the others' gradients would be
        # computed and dropped (ANIL adapts the head only: no backward through the body)
        trainable = [i for i in self._stepped if not params[i].is_stop_grad()]
        grads = [None] * len(params)
        for i, g in zip(trainable, grads_with_zeros(loss, [params[i] for i in trainable])):
            grads[i] = g if self._track_higher_grads else g.detach()
        if self.gradient_reduction is not None:
            grads = list(self.gradient_reduction(grads))
        callback = grad_callback if grad_callback is not None else self._grad_callback
        if callback is not None:
            grads = list(callback(grads))
        new_params = list(params)
        for group_index, group in enumerate(self.param_groups):
            for i in group["indices"]:
                if grads[i] is None:
                    continue
                new_params[i] = self._update(group, (group_index, i), params[i], grads[i])
        if not self._track_higher_grads:
            new_params = [p if p.is_stop_grad() else p.detach() for p in new_params]
            self.detach_state()
        if self.fmodel is not None and record:
            self.fmodel.update_params(new_params)
        return new_params

    def detach_state(self):
        """Cut the optimizer state (momentum, moments) from the graph."""
        for state in self.state.values():
            for name, value in state.items():
                if isinstance(value, jt.Var):
                    state[name] = value.detach()

    def flat_state(self):
        """The state as ``(layout, values)``: ``values`` is the flat list of its Vars
        (momentum buffers, moments), ``layout`` the rest (keys, step counts) and where
        each Var goes. :meth:`load_flat_state` rebuilds the state from both, so a pure
        step ``(params, values) -> (new params, new values)`` can be replayed
        (checkpointed reverse mode)."""
        layout, values = [], []
        for key in sorted(self.state):
            entry = {}
            for name, value in self.state[key].items():
                if isinstance(value, jt.Var):
                    entry[name] = (True, len(values))
                    values.append(value)
                else:
                    entry[name] = (False, value)
            layout.append((key, entry))
        return layout, values

    def load_flat_state(self, layout, values):
        """Replace the state by the one :meth:`flat_state` described, with ``values``
        (a list aligned with the one it returned) as its Vars."""
        self.state = {key: {name: values[item] if is_var else item
                            for name, (is_var, item) in entry.items()}
                      for key, entry in layout}

    def _update(self, group, key, param, grad):
        """Return the new value of one parameter (out of place). Abstract."""
        raise NotImplementedError

    def _state(self, key, **initial):
        if key not in self.state:
            self.state[key] = dict(initial)
        return self.state[key]


class DifferentiableSGD(DifferentiableOptimizer):
    """Jittor's SGD rule: ``dp = g + wd p``, ``buf = mu buf + (1 - d) dp``,
    ``p - lr (dp + mu buf)`` (Nesterov) or ``p - lr buf`` (buffer starts at 0)."""

    hyperparameters = {"momentum": 0.0, "weight_decay": 0.0, "dampening": 0.0,
                       "nesterov": False}

    def _update(self, group, key, param, grad):
        lr, momentum = group["lr"], group["momentum"]
        step = grad + param * group["weight_decay"] if group["weight_decay"] else grad
        if momentum == 0:
            return param - step * lr
        state = self._state(key, buf=None)
        buf = step * (1 - group["dampening"])
        if state["buf"] is not None:
            buf = state["buf"] * momentum + buf
        state["buf"] = buf
        if group["nesterov"]:
            return param - (step + buf * momentum) * lr
        return param - buf * lr


def _safe_sqrt(v):
    # sqrt has an infinite derivative at 0; the tiny shift keeps second-order
    # derivatives finite where a moment is exactly zero.
    return jt.sqrt(v + 1e-30)


class DifferentiableAdam(DifferentiableOptimizer):
    """Jittor's Adam rule (L2 weight decay added to the gradient)."""

    hyperparameters = {"eps": 1e-8, "betas": (0.9, 0.999), "weight_decay": 0.0}

    def _update(self, group, key, param, grad):
        b1, b2 = group["betas"]
        if group["weight_decay"]:
            grad = grad + param * group["weight_decay"]
        state = self._state(key, n=0, m=None, v=None)
        state["n"] += 1
        n = state["n"]
        m = grad * (1 - b1) if state["m"] is None else state["m"] * b1 + grad * (1 - b1)
        v = grad * grad * (1 - b2) if state["v"] is None else state["v"] * b2 + grad * grad * (1 - b2)
        state["m"], state["v"] = m, v
        step_size = group["lr"] * math.sqrt(1 - b2 ** n) / (1 - b1 ** n)
        return param - m * step_size / (_safe_sqrt(v) + group["eps"])


class DifferentiableAdamW(DifferentiableOptimizer):
    """Jittor's AdamW rule (decoupled weight decay)."""

    hyperparameters = {"eps": 1e-8, "betas": (0.9, 0.999), "weight_decay": 0.0}

    def _update(self, group, key, param, grad):
        b1, b2 = group["betas"]
        lr = group["lr"]
        state = self._state(key, n=0, m=None, v=None)
        state["n"] += 1
        n = state["n"]
        decayed = param * (1 - lr * group["weight_decay"]) if group["weight_decay"] else param
        m = grad * (1 - b1) if state["m"] is None else state["m"] * b1 + grad * (1 - b1)
        v = grad * grad * (1 - b2) if state["v"] is None else state["v"] * b2 + grad * grad * (1 - b2)
        state["m"], state["v"] = m, v
        denom = _safe_sqrt(v) / math.sqrt(1 - b2 ** n) + group["eps"]
        return decayed - m * (lr / (1 - b1 ** n)) / denom


class DifferentiableRMSprop(DifferentiableOptimizer):
    """Jittor's RMSprop rule: ``v = a v + (1 - a) g^2``, ``p - lr g / (sqrt(v) + eps)``."""

    hyperparameters = {"eps": 1e-8, "alpha": 0.99}

    def _update(self, group, key, param, grad):
        alpha = group["alpha"]
        state = self._state(key, v=None)
        v = grad * grad * (1 - alpha)
        if state["v"] is not None:
            v = state["v"] * alpha + v
        state["v"] = v
        return param - grad * group["lr"] / (_safe_sqrt(v) + group["eps"])


def register_optim(optim_type, diff_optim_type):
    """Map a ``jittor.optim`` class to its differentiable twin."""
    if not (isinstance(diff_optim_type, type)
            and issubclass(diff_optim_type, DifferentiableOptimizer)):
        raise TypeError("diff_optim_type must subclass DifferentiableOptimizer.")
    _OPT_MAPPING[optim_type] = diff_optim_type


def supported_optimizers():
    """Names of the optimizer classes that have a differentiable twin."""
    return sorted(t.__name__ for t in _OPT_MAPPING)


for _real, _diff in ((jt.optim.SGD, DifferentiableSGD), (jt.optim.Adam, DifferentiableAdam),
                     (jt.optim.AdamW, DifferentiableAdamW),
                     (jt.optim.RMSprop, DifferentiableRMSprop)):
    register_optim(_real, _diff)


def get_diff_optim(opt, reference_params, fmodel=None, device=None, override=None,
                   track_higher_grads=True, **kwargs):
    """Build the differentiable twin of the real optimizer ``opt``."""
    diff_type = _OPT_MAPPING.get(type(opt))
    if diff_type is None:
        by_name = {t.__name__: d for t, d in _OPT_MAPPING.items()}
        diff_type = by_name.get(type(opt).__name__)
    if diff_type is None:
        raise ValueError(
            f"Optimizer type {type(opt).__name__} not supported for the lower level. "
            f"Supported: {', '.join(supported_optimizers())}; or register a "
            f"differentiable twin with jboat.higher_jit.register_optim.")
    return diff_type(opt, reference_params, fmodel=fmodel, device=device, override=override,
                     track_higher_grads=track_higher_grads, **kwargs)
