"""Small helpers shared by the shim and the operators."""

import contextlib

import jittor as jt

__all__ = ["grads_with_zeros", "quiet_jittor_log"]


@contextlib.contextmanager
def quiet_jittor_log():
    """Silence Jittor's C++ log while building gradient graphs.

    ``jt.grad`` warns once per target that does not influence the output (the
    gradient is then zero, which is what bilevel operators want, e.g. a UL
    variable absent from the LL loss). The flag is restored afterwards.
    """
    previous = jt.flags.log_silent
    jt.flags.log_silent = 1
    try:
        yield
    finally:
        jt.flags.log_silent = previous


def grads_with_zeros(output, inputs, retain_graph=True):
    """Gradients of scalar ``output`` w.r.t. each Var in ``inputs``.

    Targets that do not influence ``output`` get zeros of their shape. The result
    is differentiable (Jittor builds the backward graph from ordinary ops).
    """
    inputs = list(inputs)
    if not inputs:
        return []
    with quiet_jittor_log():
        return list(jt.grad(output, inputs, retain_graph))
