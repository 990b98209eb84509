"""Fusion barriers: a way around fused kernels that Jittor generates but cannot compile.

Jittor fuses chains of element-wise, broadcast and reduce ops into one generated C++
(or CUDA) kernel. Some large fused kernels do not compile: on second-order graphs of
networks whose activations feed many branches (DARTS cells: every node feeds the
mixed operations of all later nodes) Jittor 1.3 emits a kernel that uses a loop range
before declaring it (``error: 'range1' was not declared in this scope``). Which shapes
trigger it cannot be predicted from the model.

:func:`fusion_barriers` is a context whose levels cut fusion where it is cheapest:

* level 1 marks the inputs and the output of every module call (``jt.Module.__call__``)
  ``stop_fuse``: no fused kernel spans two layers, and, since Jittor marks each partial
  sum of the gradient of a ``stop_fuse`` variable ``stop_fuse`` too, no fused kernel
  sums the gradients of all consumers of a layer input at once (a DARTS node feeds
  eight operations on every later edge);
* level 2 sets ``jt.flags.no_fuse``: no fusion at all (slow, the last resort).

Every failing kernel seen so far begins with a pending array op (a ``jt.array`` that
nothing has executed yet, or a Python constant); Jittor fuses those into their consumers
whatever ``stop_fuse`` says. So at level 1 and above the feeds are executed before each
iteration (:func:`execute_inputs`), and :class:`jboat.Problem` executes the weights and
optimizer state once when the solvers are built: a roll-back snapshot that still pointed
into the failed graph would run the failing kernel again while being restored.

Values and derivatives are unchanged: only how Jittor groups ops into kernels.
:class:`jboat.Problem` runs without barriers and, when an iteration fails to compile,
restores its state, logs a warning and reruns the iteration at the next level, which
it keeps for later iterations.
"""

import contextlib
import threading

import jittor as jt

from ..state import map_tree

__all__ = ["fusion_barriers", "is_compile_failure", "execute_inputs", "MAX_LEVEL"]

MAX_LEVEL = 2
_lock = threading.RLock()
_depth = 0
_original_call = None


def is_compile_failure(error):
    """Whether ``error`` is Jittor failing to compile a kernel it generated."""
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "Error happend during compilation" in text or "Compile fused operator" in text
        or "Run cmd failed" in text and "jit/" in text)


def feed_vars(tree):
    """The Vars in ``tree`` (feed dicts, lists of them), in order."""
    found = []
    map_tree(jt.Var, found.append, tree)
    return found


def execute_inputs(tree):
    """Execute the Vars in ``tree`` (feed dicts, lists of them) before a graph is built
    on them.

    A Var made by ``jt.array(numpy_batch)`` stays an un-executed array op until
    something reads it, and Jittor fuses such array ops into their consumers' kernels
    regardless of ``stop_fuse``. Every failing kernel seen so far began with an array
    op; executed first, the feeds are plain stored inputs, and the barriers of level 1
    hold. One host synchronisation (cheap: nothing else is pending at the start of an
    iteration)."""
    pending = feed_vars(tree)
    if pending:
        jt.sync(pending)


def _barrier(value):
    if isinstance(value, jt.Var):
        value.stop_fuse()
    elif isinstance(value, (list, tuple)):
        for v in value:
            _barrier(v)
    return value


def _call_with_barrier(self, *args, **kwargs):
    _barrier(args)
    return _barrier(_original_call(self, *args, **kwargs))


@contextlib.contextmanager
def fusion_barriers(level=1):
    """While open, Jittor fuses less (see the module docstring). ``level`` 0 does
    nothing; 1 cuts at module outputs; 2 switches fusion off. Re-entrant."""
    global _depth, _original_call
    if not level:
        yield
        return
    with contextlib.ExitStack() as stack:
        if level >= 2:
            stack.enter_context(jt.flag_scope(no_fuse=1))
        with _lock:
            if _depth == 0:
                _original_call = jt.Module.__dict__["__call__"]
                jt.Module.__call__ = _call_with_barrier
            _depth += 1
        try:
            yield
        finally:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    jt.Module.__call__ = _original_call
