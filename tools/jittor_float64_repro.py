"""Minimal reproducers of Jittor's float64 defects (not jboat code; no jboat import).

    python tools/jittor_float64_repro.py        # prints BUG / ok per case, exit 1 on a bug

Each case runs in a fresh interpreter (case A depends on what ran before in the
process). Jittor 1.3.11 on CPU (``nvcc_path="" use_mkl=0``), float64 through
``jt.flags.auto_convert_64_to_32 = 0``:

A. **A float32 kernel reused for float64.** ``jt.grad((x*x).sum() + x.sum()*0.5, x)`` is
   right in float64 in a fresh process, but if the same expression was differentiated in
   float32 earlier in the process, the float64 gradient is garbage (zeros, -2e-289,
   1e+39 or inf: float32 bits read as float64), silently. In this minimal case the
   trigger is the gradient of ``x.sum() * c`` or ``x.sum() / c`` (``c`` a Python number
   or a float64 Var) added to another gradient term of ``x``; ``(x * c).sum()`` there
   does not trigger it, and running the float64 computation first (before any float32
   one) avoids it. Other graphs are hit too, less visibly: a float64 logistic-regression
   iMAML test (tests/na_ol/test_imaml.py) came out 4-12 % off after the few-shot tests'
   float32 work. So a backward kernel compiled for float32 is looked up again for
   float64 (a cache key without the dtype; not traced further in Jittor's C++).
   This is the "float64 ``jt.grad`` returns zeros or wrong values after float32 work in
   the same process" that the pooling audit and a checkpoint test met: the audit's
   scalar ``(c*y*y).sum()*0.5 + (d*y).sum()`` has the pattern, and the few-shot tests
   had compiled a matching float32 kernel (tests/test_second_order_audit.py therefore
   measures in a fresh process).
B. **Reflected scalar ops demote one-element float64 Vars.** ``0.5 * v``, ``2 * v``,
   ``0.5 + v``, ``1 - v`` are float32 when ``v`` has one element (a loss); ``v * 0.5`` stays
   float64. A float64 loss written ``0.5 * loss`` is only float32-accurate.
C. **The backward of ``v * 0.5``** (one-element float64 ``v``) is float32.
D. **``mean``'s backward** is float32-accurate in float64 (relative error ~1e-8).
"""

import json
import os
import subprocess
import sys

CASES = {}


def case(func):
    CASES[func.__name__] = func
    return func


def _jittor():
    os.environ.setdefault("nvcc_path", "")
    os.environ.setdefault("use_mkl", "0")
    import jittor as jt
    jt.flags.auto_convert_64_to_32 = 0
    return jt


def _grad_after(jt, first_dtypes):
    import numpy as np
    a = np.arange(6.0).reshape(2, 3) / 7
    result = None
    for dtype in first_dtypes:
        x = jt.array(a.astype(dtype))
        g = jt.grad((x * x).sum() + x.sum() * 0.5, x).numpy()
        result = float(np.abs(g - (2 * a + 0.5)).max())
    return result


@case
def A_float32_then_float64_grad():
    jt = _jittor()
    error = _grad_after(jt, ["float32", "float64"])
    return {"bug": error > 1e-6, "detail": f"float64 gradient max error {error:.3g} after a "
                                           "float32 run of the same expression"}


@case
def A_control_float64_alone():
    jt = _jittor()
    error = _grad_after(jt, ["float64"])
    return {"bug": error > 1e-12, "detail": f"float64 gradient max error {error:.3g} "
                                            "(fresh process, no float32 run first)"}


@case
def B_reflected_scalar_op():
    import numpy as np
    jt = _jittor()
    v = jt.array(np.array([1.0]))
    dtypes = {"0.5 * v": str((0.5 * v).dtype), "v * 0.5": str((v * 0.5).dtype),
              "1 - v": str((1 - v).dtype), "0.5 * w (3 elements)":
              str((0.5 * jt.array(np.ones(3))).dtype)}
    return {"bug": dtypes["0.5 * v"] != "float64" or dtypes["1 - v"] != "float64",
            "detail": dtypes}


@case
def C_backward_of_scalar_times_float():
    import numpy as np
    jt = _jittor()
    x = jt.array(np.ones(3))
    dtype = str(jt.grad(x.sum() * 0.5, x).dtype)
    return {"bug": dtype != "float64", "detail": f"grad of x.sum() * 0.5 is {dtype}"}


@case
def D_mean_backward():
    import numpy as np
    jt = _jittor()
    x = jt.array(np.random.RandomState(0).randn(3, 7))
    g = jt.grad(x.mean(), x).numpy()
    error = float(np.abs(g - 1 / 21).max() * 21)
    return {"bug": error > 1e-12,
            "detail": f"relative error of mean's float64 backward {error:.3g}"}


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--case":
        print("RESULT " + json.dumps(CASES[sys.argv[2]]()))
        return 0
    any_bug = False
    for name in CASES:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", name],
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            print(f"{name}: could not run ({proc.stderr.strip()[-300:]})")
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        any_bug |= result["bug"]
        print(f"{name}: {'BUG' if result['bug'] else 'ok'} - {result['detail']}", flush=True)
    return 1 if any_bug else 0


if __name__ == "__main__":
    sys.exit(main())
