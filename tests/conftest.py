import os
import sys

# jboat must be imported before Jittor so that its environment defaults apply.
import jboat  # noqa: F401
import pytest

sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped where Jittor finds none)")


def pytest_collection_modifyitems(config, items):
    import jittor as jt

    if jt.has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (Jittor found none)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# Opt-in time per test file: JBOAT_TEST_TIMES=PATH writes "wall<TAB>cpu<TAB>file" lines
# (seconds, slowest first; setup + call + teardown of every test in the file, module-scoped
# fixtures included; cpu = this process and its finished children, e.g. Jittor's compiler
# runs and subprocesses: less sensitive to a busy machine than wall time), and the
# terminal summary lists the ten slowest files.
_FILE_SECONDS = {}


def _cpu_seconds():
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not os.environ.get("JBOAT_TEST_TIMES"):
        yield
        return
    import time

    wall, cpu = time.perf_counter(), _cpu_seconds()
    yield
    path = item.nodeid.split("::", 1)[0]
    before = _FILE_SECONDS.get(path, (0.0, 0.0))
    _FILE_SECONDS[path] = (before[0] + time.perf_counter() - wall,
                           before[1] + _cpu_seconds() - cpu)


def _slowest_files():
    return sorted(_FILE_SECONDS.items(), key=lambda item: -item[1][0])


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("JBOAT_TEST_TIMES")
    if target and _FILE_SECONDS:
        with open(target, "w") as f:
            f.writelines(f"{wall:.1f}\t{cpu:.1f}\t{path}\n"
                         for path, (wall, cpu) in _slowest_files())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if os.environ.get("JBOAT_TEST_TIMES") and _FILE_SECONDS:
        wall = sum(w for w, _ in _FILE_SECONDS.values())
        cpu = sum(c for _, c in _FILE_SECONDS.values())
        terminalreporter.section(f"slowest test files (tests: {wall:.0f} s wall, "
                                 f"{cpu:.0f} s cpu)")
        for path, (w, c) in _slowest_files()[:10]:
            terminalreporter.write_line(f"{w:8.1f} s wall {c:8.1f} s cpu  {path}")


@pytest.fixture
def float64():
    """Jittor keeps float64 as float64 for the test (by default it casts to float32);
    finite-difference oracles need it. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("float64")``."""
    import jittor as jt

    previous = jt.flags.auto_convert_64_to_32
    jt.flags.auto_convert_64_to_32 = 0
    yield
    jt.flags.auto_convert_64_to_32 = previous
