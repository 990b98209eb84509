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


def run_result_worker(cmd, cwd, timeout):
    """Run a benchmark worker process; return the JSON of its ``RESULT {...}`` line, or
    ``{"error": ...}`` with the end of its stderr (or the timeout)."""
    import json
    import subprocess

    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT {"):
            return json.loads(line[len("RESULT "):])
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    return {"error": f"worker failed: {tail[-400:]}"}
