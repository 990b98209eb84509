"""Property-based fuzzing of the solver config: only ValueError/TypeError/KeyError, with
a message, at build time — never another exception type or a hang."""

import jittor as jt
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import jboat  # noqa: E402
from quadratic import Quadratic, gda_loss, lower_loss, upper_loss  # noqa: E402

NAMES = ["NGD", "GDA", "DI", "DM", "RAD", "RGT", "PTT", "FD", "CG", "NS", "IGA", "IAD", "FOA",
         "VSO", "VFO", "MESO", "PGDO", "ALTO", "GAFFO", "ngd", "rad", "BOGUS", ""]
SECTIONS = ["GDA", "DI", "DM", "RGT", "CG", "FD", "VSO", "VFO", "MESO", "PGDO", "GAFFO", "NOPE"]
KEYS = ["alpha_init", "alpha_decay", "lr", "truncate_iter", "k", "tolerance", "r", "strategy",
        "tau", "p", "mu0", "eta0", "auxiliary_v_lr", "z_loop", "z_lr", "ll_l2_reg", "ul_l2_reg",
        "ul_ln_reg", "reg_decay", "y_hat_lr", "u1", "eta", "gamma_1", "c0", "gamma_init",
        "gamma_max", "gamma_argmax_step", "update_y_ahead", "penalty", "lambda", "sigma", "junk"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 30),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False, width=32),
    st.sampled_from(["s1", "s2", "s3", "difference", "gradient", "1e-3", ""]),
    st.lists(st.integers(0, 3), max_size=2))
op_lists = st.one_of(st.none(), st.sampled_from(NAMES),
                     st.lists(st.sampled_from(NAMES), max_size=4), st.integers())
sections = st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4)


@pytest.fixture(scope="module")
def runtime():
    q = Quadratic()
    q.build()
    return {"lower_level_model": q.lower, "upper_level_model": q.upper,
            "lower_level_var": list(q.lower.parameters()),
            "upper_level_var": list(q.upper.parameters()),
            "lower_level_opt": jt.optim.SGD(q.lower.parameters(), lr=0.1),
            "upper_level_opt": jt.optim.SGD(q.upper.parameters(), lr=0.1)}


LOSSES = {"lower_level_loss": lower_loss, "upper_level_loss": upper_loss, "gda_loss": gda_loss}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gm_op=op_lists, na_op=op_lists, fo_op=st.one_of(st.none(), st.sampled_from(NAMES)),
       extra=st.dictionaries(st.sampled_from(
           ["lower_iters", "return_grad", "accumulate_grad", "copy_last_param",
            "fogm_batch_input", "loss_log_path", "device", "bogus_key", "nan_guard"] + SECTIONS),
           st.one_of(scalars, sections), max_size=5))
def test_fuzzed_configs_fail_cleanly(runtime, gm_op, na_op, fo_op, extra):
    config = dict(runtime, gm_op=gm_op, na_op=na_op, fo_op=fo_op, **extra)
    config.pop("device", None) if extra.get("device") == "cuda" else None
    try:
        problem = jboat.Problem(config, LOSSES)
        problem.build_ll_solver().build_ul_solver()
    except Exception as exc:   # noqa: BLE001 (the test checks the type)
        # bad input raises the documented exceptions (jboat.errors), never an
        # AssertionError, AttributeError, IndexError ... from inside the library
        assert isinstance(exc, (ValueError, TypeError, KeyError)), repr(exc)
        assert not isinstance(exc, AssertionError), repr(exc)
        assert str(exc).strip(), "errors must carry a message"
