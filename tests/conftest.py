import os
import sys

# jboat must be imported before Jittor so that its environment defaults apply.
import jboat  # noqa: F401
import pytest

sys.path.insert(0, os.path.dirname(__file__))


def pytest_collection_modifyitems(config, items):
    import jittor as jt

    if jt.has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (Jittor found none)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# Opt-in time per test file: JBOAT_TEST_TIMES=PATH writes "seconds<TAB>file" lines,
# slowest first (setup + call + teardown of every test in the file, module-scoped
# fixtures included), and the terminal summary lists the ten slowest files.
_FILE_SECONDS = {}


def pytest_runtest_logreport(report):
    if os.environ.get("JBOAT_TEST_TIMES"):
        path = report.nodeid.split("::", 1)[0]
        _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def _slowest_files():
    return sorted(_FILE_SECONDS.items(), key=lambda item: -item[1])


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("JBOAT_TEST_TIMES")
    if target and _FILE_SECONDS:
        with open(target, "w") as f:
            f.writelines(f"{seconds:.1f}\t{path}\n" for path, seconds in _slowest_files())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if os.environ.get("JBOAT_TEST_TIMES") and _FILE_SECONDS:
        total = sum(_FILE_SECONDS.values())
        terminalreporter.section(f"slowest test files (of {total:.0f} s in tests)")
        for path, seconds in _slowest_files()[:10]:
            terminalreporter.write_line(f"{seconds:8.1f} s  {path}")
