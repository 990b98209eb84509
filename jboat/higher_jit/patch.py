"""Stateless view of a Jittor module whose parameters are swapped for fast weights.

Instead of building a functional copy of the module, the patched view records once
where each parameter lives (the owning ``__dict__`` and attribute name), and for
each forward call swaps the fast weights in, runs the module's own ``execute`` and
swaps the originals back in a ``finally`` block. The real module is never
modified outside a call, so nothing needs restoring when the context closes.

Buffers (stop-grad entries of ``module.parameters()``, e.g. BatchNorm's running
statistics) are swapped for fresh copies during a call, so a forward in training
mode (which updates them) leaves the real module's buffers untouched: the inner
loop uses batch statistics (transductive, as in MAML) and its updates of the
running statistics are discarded. While the patched model tracks higher
gradients, layers without a second derivative run twice-differentiable
substitutes (:mod:`jboat.higher_jit.second_order`).
"""

import jittor as jt

from .second_order import second_order_layers

__all__ = ["_MonkeyPatchBase", "monkeypatch", "functional_view", "make_functional",
           "parameter_slots"]


def parameter_slots(module):
    """Locate every entry of ``module.parameters()``.

    Returns:
        A pair ``(params, slots)``: ``params`` is ``module.parameters()`` (tied
        Vars once) and ``slots`` a list of ``(owner_dict, key, index)`` telling that
        ``owner_dict[key]`` holds ``params[index]``. A Var reachable under several
        names yields several slots with the same index.
    """
    params = list(module.parameters())
    index_of = {id(p): i for i, p in enumerate(params)}
    slots = []

    def visit(parents, key, sub, n_children):
        owner = sub.params if isinstance(sub, jt.nn.ParameterList) else sub.__dict__
        for name, value in owner.items():
            if isinstance(name, str) and name.startswith("_"):
                continue
            if isinstance(value, jt.Var) and id(value) in index_of:
                slots.append((owner, name, index_of[id(value)]))

    module.dfs([], None, visit, None, True)
    return params, slots


class _MonkeyPatchBase:
    """A patched module: call it like the original, with fast weights in place.

    Args:
        module: the ``jittor.Module`` to view.
        initial_params: list aligned with ``module.parameters()``, the fast
            weights at time 0.
        track_higher_grads: keep the whole history of fast weights (each a
            differentiable function of the previous ones) or only the latest.
        second_order: run forwards with twice-differentiable layer substitutes
            (:func:`~jboat.higher_jit.second_order.second_order_layers`); ``None``
            (default): while ``track_higher_grads`` is on.
    """

    def __init__(self, module, initial_params, track_higher_grads=True, second_order=None):
        if isinstance(module, _MonkeyPatchBase):
            raise ValueError("This module is already patched; pass the original "
                             "jittor.Module to monkeypatch.")
        params, slots = parameter_slots(module)
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_reference_params", params)
        object.__setattr__(self, "_slots", slots)
        object.__setattr__(self, "_trainable", [not p.is_stop_grad() for p in params])
        object.__setattr__(self, "_history", [])
        object.__setattr__(self, "_second_order", second_order)
        self.track_higher_grads = track_higher_grads
        self._check_aligned(initial_params)
        self._history.append(list(initial_params))

    # -- fast weights ------------------------------------------------------------
    def _check_aligned(self, values):
        if len(values) != len(self._reference_params):
            raise ValueError(
                f"Expected {len(self._reference_params)} parameters aligned with "
                f"module.parameters(), got {len(values)}.")

    @property
    def track_higher_grads(self):
        return self._track_higher_grads

    @track_higher_grads.setter
    def track_higher_grads(self, value):
        if not isinstance(value, bool):
            raise ValueError(f"track_higher_grads must be a bool, got {value!r}.")
        object.__setattr__(self, "_track_higher_grads", value)

    @property
    def fast_params(self):
        """The latest fast weights (a list aligned with the module's parameters)."""
        return list(self._history[-1]) if self._history else None

    @property
    def init_fast_params(self):
        """The fast weights at time 0 (only while tracking)."""
        if not self.track_higher_grads:
            raise ValueError("The patched model is not tracking higher gradients. "
                             "Only the latest parameters are available.")
        return list(self._history[0])

    @property
    def trainable_mask(self):
        """Per parameter: whether it is trainable (stop-grad buffers are not)."""
        return list(self._trainable)

    def update_params(self, new_params):
        """Record ``new_params`` as the newest fast weights.

        While tracking they are appended to the history; otherwise they replace
        the single stored slot.
        """
        self._check_aligned(new_params)
        if self.track_higher_grads:
            self._history.append(list(new_params))
        else:
            self._history[-1] = list(new_params)

    def reset_initial_params(self, new_params):
        """Replace the whole history by ``new_params`` as time 0 (RGT truncation)."""
        self._check_aligned(new_params)
        self._history[:] = [list(new_params)]

    def parameters(self, recurse=True, time=None):
        """Fast weights at history index ``time`` (None or -1: latest, 0: initial)."""
        if time is None:
            time = -1
        if not self.track_higher_grads and time not in (-1, 0):
            raise ValueError("The patched model is not tracking higher gradients. "
                             "Only the latest parameters are available.")
        return list(self._history[time])

    def history_length(self):
        """Number of stored fast-weight lists (1 + steps taken while tracking)."""
        return len(self._history)

    # -- forward -------------------------------------------------------------------
    def __call__(self, *args, params=None, **kwargs):
        """Run the module's forward with ``params`` (default: latest) swapped in.

        Side-effect free: the history is not changed by a call, and buffers the
        forward updates in place (BatchNorm running statistics in training mode)
        are temporary copies, so the real module's buffers keep their values.
        """
        values = self._history[-1] if params is None else list(params)
        self._check_aligned(values)
        saved = [(owner, key, owner[key]) for owner, key, _ in self._slots]
        try:
            copies = {}
            for owner, key, index in self._slots:
                if self._trainable[index]:
                    owner[key] = values[index]
                else:   # one copy per buffer, shared by its aliases
                    if index not in copies:
                        copies[index] = values[index].clone().stop_grad()
                    owner[key] = copies[index]
            second_order = self._second_order
            if second_order is None:
                second_order = self._track_higher_grads
            with second_order_layers(second_order):
                return self._module(*args, **kwargs)
        finally:
            for owner, key, original in saved:
                owner[key] = original

    def execute(self, *args, **kwargs):
        return self(*args, **kwargs)

    def __getattr__(self, name):
        # Only reached when normal lookup fails. A top-level parameter attribute
        # (e.g. ``fmodel.weight``) gives its latest fast weight; anything else falls
        # through to the wrapped module.
        module = object.__getattribute__(self, "_module")
        root = module.__dict__
        for owner, key, index in object.__getattribute__(self, "_slots"):
            if owner is root and key == name:
                return self._history[-1][index]
        return getattr(module, name)

    def __setattr__(self, name, value):
        if name == "track_higher_grads" or name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._module, name, value)

    def __repr__(self):
        return f"Patched({self._module!r})"


def monkeypatch(module, device=None, copy_initial_weights=True, track_higher_grads=True,
                second_order=None):
    """Return a patched, stateless view of ``module``.

    Args:
        module: a ``jittor.Module``.
        device: accepted for API compatibility; Jittor places Vars globally.
        copy_initial_weights: if True the initial fast weights are detached
            copies (derivatives stop there); if False they are differentiable
            clones, so derivatives w.r.t. time 0 reach the real parameters.
            Either way they are value snapshots: later updates of the real
            parameters do not change them.
        track_higher_grads: keep the differentiable history of fast weights.
        second_order: forwards run twice-differentiable substitutes for layers
            whose backward has no derivative (True), the stock kernels (False), or
            the former while ``track_higher_grads`` is on (None, the default).
    """
    if isinstance(module, _MonkeyPatchBase):
        raise ValueError("This module is already patched; pass the original "
                         "jittor.Module to monkeypatch.")
    if not isinstance(module, jt.Module):
        raise TypeError(f"monkeypatch expects a jittor.Module, got {type(module).__name__}.")
    initial = []
    for p in module.parameters():
        if p.is_stop_grad():
            initial.append(p)
        elif copy_initial_weights:
            initial.append(p.detach())
        else:
            initial.append(p.clone())
    return _MonkeyPatchBase(module, initial, track_higher_grads=track_higher_grads,
                            second_order=second_order)


make_functional = monkeypatch


def functional_view(module):
    """A patched view of ``module`` to be called with ``params=`` only: it holds the
    real parameters (no copy, no history)."""
    if not isinstance(module, jt.Module):
        raise TypeError(f"functional_view expects a jittor.Module, got {type(module).__name__}.")
    return _MonkeyPatchBase(module, list(module.parameters()), track_higher_grads=False)
