"""A small functional-patching shim for Jittor, standing in for PyTorch's ``higher``.

``innerloop_ctx(model, opt)`` yields ``(fmodel, diffopt)``: ``fmodel`` calls the real
module with fast weights swapped in (side-effect free), ``diffopt.step(loss)``
appends a new list of fast weights computed out of place with the real optimizer's
rule. See ``docs/`` and the module docstrings for details.
"""

import contextlib

from . import fusion, optim, patch, second_order, utils
from .optim import DifferentiableOptimizer, get_diff_optim, register_optim
from .patch import _MonkeyPatchBase, functional_view, monkeypatch
from .second_order import second_order_layers

__all__ = ["innerloop_ctx", "monkeypatch", "functional_view", "get_diff_optim", "register_optim",
           "DifferentiableOptimizer", "second_order_layers", "patch", "optim",
           "second_order", "fusion", "utils"]


@contextlib.contextmanager
def innerloop_ctx(model, opt, device=None, copy_initial_weights=True, override=None,
                  track_higher_grads=True, second_order=None):
    """Context yielding a patched view of ``model`` and a differentiable ``opt`` twin.

    The real module and optimizer are never modified; leaving the context drops
    the recorded fast-weight history. ``second_order``: see :func:`monkeypatch`
    (None: twice-differentiable layer substitutes while tracking higher grads).
    """
    fmodel = monkeypatch(model, device, copy_initial_weights=copy_initial_weights,
                         track_higher_grads=track_higher_grads, second_order=second_order)
    diffopt = get_diff_optim(opt, model.parameters(), fmodel=fmodel, device=device,
                             override=override, track_higher_grads=track_higher_grads)
    yield fmodel, diffopt
