#!/usr/bin/env bash
# Optional set-up step: install OpenMPI so that Jittor builds its MPI operators
# (jboat's multi-process mode: `mpirun -np N python script.py`).
#
# Never fails the set-up: without apt-get, without root (and no password-less
# sudo), offline, or when the install fails, it prints why and exits 0. The MPI
# tests then skip with that reason. Set JBOAT_SKIP_MPI=1 to skip on purpose.
set -u

say() { echo "setup_mpi: $*"; }

if [ "${JBOAT_SKIP_MPI:-0}" = "1" ]; then
    say "JBOAT_SKIP_MPI=1, not installing OpenMPI."
    exit 0
fi
if command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1; then
    say "MPI already present ($(command -v mpirun))."
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get on this system; install OpenMPI (mpicc, mpirun) with your package" \
        "manager to use jboat under mpirun. Skipping."
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        say "not root and no password-less sudo; run" \
            "'apt-get install openmpi-bin libopenmpi-dev' as root to enable MPI. Skipping."
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
say "installing openmpi-bin libopenmpi-dev with apt-get ..."
if ! $SUDO apt-get install -y -q --no-install-recommends openmpi-bin libopenmpi-dev \
        >/tmp/jboat_setup_mpi.log 2>&1; then
    # the package lists may be missing or stale: refresh once and retry
    if ! { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends \
            openmpi-bin libopenmpi-dev; } >>/tmp/jboat_setup_mpi.log 2>&1; then
        say "apt-get could not install OpenMPI (offline?); see /tmp/jboat_setup_mpi.log." \
            "Skipping: the MPI tests will be skipped."
        exit 0
    fi
fi
if command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1; then
    say "installed $(mpirun --version 2>/dev/null | head -n 1)."
else
    say "the packages installed but mpicc/mpirun are not on the PATH. Skipping."
fi
exit 0
