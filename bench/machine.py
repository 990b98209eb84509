"""Facts about this process and machine (Linux `/proc`), shared by the benchmarks."""


def memory_mb():
    """(VmRSS, VmHWM) of this process in MiB."""
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak():
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def cpu_name():
    """The CPU model from /proc/cpuinfo (else platform's guess)."""
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def worker_result(stdout, stderr):
    """The JSON of a worker's ``RESULT {...}`` line, or ``{"error": ...}`` with the end of
    its stderr."""
    import json

    for line in stdout.splitlines():
        if line.startswith("RESULT {"):
            return json.loads(line[len("RESULT "):])
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    return {"error": f"worker failed: {tail[-400:]}"}


def run_result_worker(cmd, cwd, timeout, env=None):
    """Run a benchmark worker process (``env``: variables added to this process's);
    return :func:`worker_result` of its output, or ``{"error": ...}`` on a timeout."""
    import os
    import subprocess

    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=dict(os.environ, **env) if env else None)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    return worker_result(proc.stdout, proc.stderr)


def mpirun_command(ranks):
    """``mpirun -np ranks`` (with the flags root and more ranks than cores need)."""
    import os
    import shutil

    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise SystemExit("mpirun not found: install OpenMPI (make setup does where it can)")
    cmd = [mpirun, "-np", str(ranks)]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if ranks > (os.cpu_count() or 1):
        cmd.append("--oversubscribe")
    return cmd
