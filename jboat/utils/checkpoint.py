"""Checkpointed reverse mode through an unrolled inner loop.

An unrolled hypergradient differentiates a terminal value ``F(s_k)`` through ``k``
inner steps ``s_{j+1} = step(s_j, j)``. Plain reverse mode keeps the graph of all
``k`` steps alive until the backward pass: memory O(k) states. Here the forward
pass keeps no graph; it stores only every ``c``-th state (a *checkpoint*). The
backward pass walks the segments ``[b, b + c)`` in reverse: it rebuilds one
segment's graph from its checkpoint, takes the vector-Jacobian product of the
segment's output with the incoming cotangent with respect to (segment input, x)
in one ``jt.grad`` call, adds the ``x`` part to the hypergradient and passes the
state part on to the previous segment (Griewank & Walther, *Evaluating
Derivatives*, ch. 12: uniform checkpointing).

Cost, for ``k`` steps and interval ``c``:
    * time: one extra forward step per step (each segment is run twice: once
      without graph, once with), i.e. about 1 forward + 1 forward + 1 backward
      instead of 1 forward + 1 backward;
    * memory: ``ceil(k / c)`` detached checkpoint states plus the graph of one
      segment (``c`` steps), i.e. O(k / c + c) states, minimal (O(sqrt k)) for
      ``c ~ sqrt(k)``; plain reverse mode holds O(k).

The result is the exact gradient of the unrolled computation (same maths as
plain ``jt.grad`` through all steps; only the float summation order of the
``x``-gradient differs).

The step function is pure: ``step(state, j) -> new_state`` on a flat list of
Vars (fast weights followed by the inner optimizer's state, e.g. momentum
buffers or Adam moments), closing over the hyperparameters ``x``. The step index
``j`` (0-based) carries step counters such as Adam's bias correction. The
adapters :func:`sgd` and :func:`adam` turn a loss into such a step with the
update rules of :class:`jboat.higher_jit.DifferentiableSGD` and
:class:`jboat.higher_jit.DifferentiableAdam`.
"""

import math
from typing import Callable, NamedTuple

import jittor as jt

from ..higher_jit.utils import quiet_jittor_log

__all__ = [
    "CheckpointedTrajectory", "checkpoint_interval", "run_checkpointed",
    "reverse_checkpointed", "state_at", "checkpointed_grad", "InnerOptimizer", "sgd", "adam",
    "make_step",
]


def checkpoint_interval(num_steps, every="auto"):
    """The checkpoint interval ``c`` for ``num_steps`` steps.

    Args:
        num_steps: number of inner steps K (>= 0).
        every: a positive int, or ``"auto"`` for ``ceil(sqrt(K))`` (at least 1),
            which minimises the O(K / c + c) memory bound.
    """
    if every == "auto":
        return max(1, math.ceil(math.sqrt(max(num_steps, 1))))
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"checkpoint interval must be a positive int or 'auto', "
                         f"got {every!r}.")
    return every


class CheckpointedTrajectory(NamedTuple):
    """What the graph-free forward pass keeps.

    Attributes:
        checkpoints: ``{j: state_j}`` (detached lists of Var) for j = 0, c, 2c, ...
            below ``num_steps`` (always including j = 0).
        final: the detached last state ``state_K``.
        num_steps: K.
        every: the checkpoint interval c.
        monitored: ``[monitor(state_j, j) for j in 1..K]`` when a monitor was
            given (e.g. the UL loss along the trajectory, for PTT), else [].
    """
    checkpoints: dict
    final: list
    num_steps: int
    every: int
    monitored: list


def _detached(state):
    state = [v.detach() for v in state]
    jt.sync(state)
    return state


def run_checkpointed(step, initial_state, num_steps, every="auto", monitor=None):
    """Run ``num_steps`` steps without keeping the graph, storing every ``c``-th state.

    Args:
        step: ``step(state, j) -> state`` (lists of Var of fixed shapes).
        initial_state: list of Var, state_0.
        num_steps: K.
        every: checkpoint interval (int or ``"auto"``).
        monitor: optional ``monitor(state_j, j)`` called on each new detached
            state j = 1..K; its values are returned in ``monitored``.

    Returns:
        a :class:`CheckpointedTrajectory`. Each step is executed (``jt.sync``)
        before the next is built, so every step replays the same compiled kernels.
    """
    every = checkpoint_interval(num_steps, every)
    state = _detached(initial_state)
    checkpoints = {0: state}
    monitored = []
    for j in range(num_steps):
        if j % every == 0:
            checkpoints[j] = state
        state = _detached(step(state, j))
        if monitor is not None:
            monitored.append(monitor(state, j + 1))
    return CheckpointedTrajectory(checkpoints, state, num_steps, every, monitored)


def _segment(step, state, start, stop):
    for j in range(start, stop):
        state = list(step(state, j))
    return state


def _vjp(outputs, cotangents, targets):
    """``(total, grads)``: ``total = sum_i <outputs_i, cotangents_i>`` (or the scalar
    ``outputs`` when ``cotangents`` is None) and its gradients with respect to
    ``targets`` (lazy: the caller executes them)."""
    if cotangents is None:
        total = outputs
    else:
        total = sum((o * c).sum() for o, c in zip(outputs, cotangents))
    with quiet_jittor_log():
        grads = jt.grad(total, targets)
    return total, list(grads)


def state_at(step, trajectory, k):
    """The detached state ``state_k`` (0 <= k <= K), recomputed without graph from the
    nearest checkpoint below it (at most ``c - 1`` steps)."""
    if k == trajectory.num_steps:
        return list(trajectory.final)
    start = k // trajectory.every * trajectory.every
    state = trajectory.checkpoints[start]
    for j in range(start, k):
        state = _detached(step(state, j))
    return list(state)


def reverse_checkpointed(step, trajectory, hyper, terminal=None, cotangent=None,
                         stop=None, replay="segment", value=None):
    """Backward pass over a :class:`CheckpointedTrajectory`.

    Differentiates ``F(state_stop)`` (``stop`` defaults to K) with respect to the
    hyperparameters and the initial state, recomputing one segment at a time.

    Args:
        step: the same step function as in the forward pass.
        trajectory: the result of :func:`run_checkpointed`.
        hyper: list of Var x that ``step`` (and ``terminal``) close over.
        terminal: ``F(state) -> scalar Var``; it may depend on ``hyper`` directly
            (that partial derivative is included).
        cotangent: instead of ``terminal``, a list of Var aligned with the state:
            the gradient of the outer value with respect to ``state_stop``.
        stop: the differentiated step k* in 0..K (PTT's selected step); the
            backward pass starts there, later steps do not count.
        replay: ``"segment"``: rebuild a whole segment's graph and take one VJP
            through it (one extra forward per step; graph memory of c steps).
            ``"step"``: rerun the segment without graph keeping its c states,
            then take one single-step VJP per step in reverse (two extra forwards
            per step; graph memory of one step). Every backward step then replays
            the same one-step graph, so the kernels Jittor compiles do not depend
            on K or c (with ``"segment"`` Jittor fuses the hypergradient
            accumulation of the c steps into chains whose length depends on c).
        value: optional list; with ``terminal``, the detached value
            ``F(state_stop)`` (computed in the backward pass) is appended to it.

    Returns:
        ``(grad_hyper, grad_initial)``: lists of detached Var aligned with
        ``hyper`` and with the state (d/ds_0, the MAML/IAD gradient).
    """
    if (terminal is None) == (cotangent is None):
        raise ValueError("pass exactly one of terminal= (a function of the state) "
                         "or cotangent= (a list of Var aligned with the state).")
    K, c = trajectory.num_steps, trajectory.every
    stop = K if stop is None else stop
    if isinstance(stop, bool) or not isinstance(stop, int) or not 0 <= stop <= K:
        raise ValueError(f"stop must be an int step in 0..{K}, got {stop!r}.")
    if replay not in ("segment", "step"):
        raise ValueError(f"replay must be 'segment' or 'step', got {replay!r}.")
    hyper = list(hyper)
    grad_hyper = [jt.zeros_like(h) for h in hyper]
    cot = None if cotangent is None else _detached(cotangent)

    def backward(start_state, j_start, j_stop, cot):
        """VJP of steps j_start..j_stop-1 (or of F when cot is None) from start_state."""
        out = _segment(step, start_state, j_start, j_stop)
        total, grads = _vjp(terminal(out) if cot is None else out, cot, start_state + hyper)
        n = len(start_state)
        summed = [a + b for a, b in zip(grad_hyper, grads[n:])]
        # one execution pass: the cotangent, the running hyper-gradient (and F's value)
        done = _detached(grads[:n] + summed + ([total] if cot is None else []))
        grad_hyper[:] = done[n:n + len(summed)]
        if cot is None and value is not None:
            value.append(done[-1])
        return done[:n]

    segment_start = (stop - 1) // c * c if stop > 0 else 0
    segment_stop = stop
    while True:
        start_state = trajectory.checkpoints[segment_start]
        if replay == "segment":
            cot = backward(start_state, segment_start, segment_stop, cot)
        else:
            states = [start_state]
            for j in range(segment_start, segment_stop):
                states.append(_detached(step(states[-1], j)))
            if cot is None:
                cot = backward(states[-1], segment_stop, segment_stop, None)
            for j in range(segment_stop - 1, segment_start - 1, -1):
                cot = backward(states[j - segment_start], j, j + 1, cot)
                states.pop()
        if segment_start == 0:
            return grad_hyper, cot
        segment_stop, segment_start = segment_start, segment_start - c


def checkpointed_grad(step, initial_state, hyper, num_steps, terminal=None, cotangent=None,
                      every="auto", select=None, monitor=None, replay="segment"):
    """Forward and backward in one call: the exact unrolled hypergradient in
    O(K / c + c) memory.

    Args:
        step, initial_state, num_steps, every, monitor: as in :func:`run_checkpointed`.
        hyper, terminal, cotangent, replay: as in :func:`reverse_checkpointed`.
        select: None (differentiate at K), an int step, or a callable
            ``select(trajectory) -> int`` applied after the forward pass (e.g. PTT's
            ``1 + argmax(monitored)``).

    Returns:
        ``(grad_hyper, grad_initial, trajectory)``.
    """
    trajectory = run_checkpointed(step, initial_state, num_steps, every, monitor)
    stop = select(trajectory) if callable(select) else select
    grad_hyper, grad_initial = reverse_checkpointed(step, trajectory, hyper, terminal,
                                                    cotangent, stop, replay)
    return grad_hyper, grad_initial, trajectory


# -- pure inner optimizers ---------------------------------------------------------------------


class InnerOptimizer(NamedTuple):
    """A differentiable update rule as two pure functions.

    ``init(params) -> opt_state`` (list of Var) and
    ``update(params, grads, opt_state, j) -> (new_params, new_opt_state)`` for the
    0-based step j.
    """
    init: Callable
    update: Callable


def sgd(lr, momentum=0.0, weight_decay=0.0, dampening=0.0, nesterov=False):
    """SGD with the rule of :class:`jboat.higher_jit.DifferentiableSGD`
    (``jt.optim.SGD``): ``d = g + wd p``; ``buf = mu buf + (1 - dampening) d``
    (buffer starts at 0); ``p - lr buf`` or, Nesterov, ``p - lr (d + mu buf)``.
    The state is one buffer per parameter (none without momentum)."""

    def init(params):
        return [jt.zeros_like(p) for p in params] if momentum else []

    def update(params, grads, opt_state, j):
        new_params, new_state = [], []
        for i, (p, g) in enumerate(zip(params, grads)):
            d = g + p * weight_decay if weight_decay else g
            if not momentum:
                new_params.append(p - d * lr)
                continue
            buf = opt_state[i] * momentum + d * (1 - dampening)
            new_state.append(buf)
            new_params.append(p - (d + buf * momentum) * lr if nesterov else p - buf * lr)
        return new_params, new_state

    return InnerOptimizer(init, update)


def adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """Adam with the rule of :class:`jboat.higher_jit.DifferentiableAdam`
    (``jt.optim.Adam``, L2 weight decay): moments start at 0, step ``n = j + 1``,
    ``p - lr sqrt(1 - b2^n) / (1 - b1^n) m / (sqrt(v) + eps)``. The state is the
    first moments followed by the second moments."""
    b1, b2 = betas

    def init(params):
        return [jt.zeros_like(p) for p in params] + [jt.zeros_like(p) for p in params]

    def update(params, grads, opt_state, j):
        n = j + 1
        ms, vs = opt_state[:len(params)], opt_state[len(params):]
        step_size = lr * math.sqrt(1 - b2 ** n) / (1 - b1 ** n)
        new_params, new_m, new_v = [], [], []
        for p, g, m, v in zip(params, grads, ms, vs):
            if weight_decay:
                g = g + p * weight_decay
            m = m * b1 + g * (1 - b1)
            v = v * b2 + g * g * (1 - b2)
            new_m.append(m)
            new_v.append(v)
            # the 1e-30 shift keeps second derivatives finite where v == 0
            new_params.append(p - m * step_size / (jt.sqrt(v + 1e-30) + eps))
        return new_params, new_m + new_v

    return InnerOptimizer(init, update)


def make_step(loss, optimizer, num_params):
    """A step function on ``state = params + opt_state`` from an inner loss.

    Args:
        loss: ``loss(params, j) -> scalar Var`` (closes over the hyperparameters).
        optimizer: an :class:`InnerOptimizer`.
        num_params: how many leading state entries are parameters.

    Returns:
        ``step(state, j) -> state``, differentiable (the gradient of ``loss`` keeps
        its graph, as in unrolled reverse mode).
    """

    def step(state, j):
        params, opt_state = list(state[:num_params]), list(state[num_params:])
        with quiet_jittor_log():
            grads = jt.grad(loss(params, j), params, True)
        new_params, new_state = optimizer.update(params, grads, opt_state, j)
        return list(new_params) + list(new_state)

    return step
