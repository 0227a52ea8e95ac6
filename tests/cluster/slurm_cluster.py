"""A throwaway one-node SLURM cluster on this machine, for tests/cluster/test_slurm.py.

Debian's slurm-wlm and munge run as root from a private directory: their own munge key and
socket, slurm.conf, state, spool, logs and free TCP ports, so nothing is written to /etc, /run
or /var, and a system munged or SLURM (if any) is left alone. Clients find the
configuration through SLURM_CONF (see `LocalSlurm.env`). Every daemon is started in the
foreground as a child of this process, so `stop()` ends exactly the processes it started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
# The binaries the cluster and the executor plugin call (daemons live in /usr/sbin).
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol")
SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
PARTITION = "snaketest"
MIN_JOB_AGE = 600  # s a finished job stays visible to squeue (the plugin's status source here)


def which(name: str) -> str | None:
    """`shutil.which`, also looking in the sbin directories a non-login PATH may lack."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if which(b) is None]


def install_reason() -> str | None:
    """Install Debian's slurm-wlm and munge where missing; a reason to skip if that can't be.

    Installing needs root and apt-get; running the daemons needs root anyway (slurmd starts
    jobs as their user), so a non-root run is skipped even when the packages are there.
    """
    if os.geteuid() != 0:
        return "the SLURM test needs root (to apt-get install slurm-wlm munge and run slurmd)"
    if not missing_binaries():
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return f"SLURM is not installed ({', '.join(missing_binaries())} missing) and no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["update", "-q"], ["install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        r = subprocess.run([apt, *args], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(
                f"apt-get {' '.join(args)} failed ({r.returncode}):\n"
                f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            )
    if missing_binaries():
        raise RuntimeError(f"still missing after apt-get install: {missing_binaries()}")
    return None


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on 127.0.0.1 now (all bound at once, then released)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def real_memory_mb() -> int:
    """MemTotal from /proc/meminfo in MiB, less 5% that the daemons and the OS keep."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.95)
    raise RuntimeError("no MemTotal in /proc/meminfo")


class LocalSlurm:
    """slurmctld + slurmd (+ munged) for one node named after this machine, under `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.memory_mb = real_memory_mb()
        self.conf = root / "etc" / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.bin = root / "bin"
        self.logs = root / "log"
        self.procs: dict[str, subprocess.Popen] = {}

    # --- environment seen by clients (sbatch, squeue, ...) and by the jobs ------------------

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF, and the srun shim first on PATH (see `_write_shim`)."""
        path = os.pathsep.join([str(self.bin), os.environ.get("PATH", ""), *SBIN])
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        r = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r.stdout

    # --- start and stop ------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        for d in ("etc", "munge", "bin", "log", "state", "spool"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        # munged refuses group- or world-writable directories on its key and socket paths
        for d in (self.root, self.root / "etc", self.root / "munge"):
            d.chmod(0o700)
        self._start_munge()
        self._write_conf()
        self._write_shim()
        self._spawn("slurmctld", which("slurmctld"), "-D", "-f", str(self.conf))
        self._spawn("slurmd", which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node)
        self.wait_idle(timeout)

    def stop(self) -> None:
        """Cancel what is still queued, then end the daemons this object started."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--partition", PARTITION, check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                out = self.run("squeue", "-h", "-t", "PD,R,CG", "-o", "%i", check=False)
                if not out.strip():
                    break
                time.sleep(1)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def _spawn(self, name: str, *cmd: str | None) -> None:
        if None in cmd:
            raise RuntimeError(f"{name}: binary not found")
        with open(self.logs / f"{name}.out", "w") as log:  # the child keeps its own copy
            self.procs[name] = subprocess.Popen(
                [str(c) for c in cmd],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # a Ctrl-C of pytest is not delivered to the daemons
            )
        time.sleep(0.5)
        if self.procs[name].poll() is not None:
            raise RuntimeError(f"{name} exited at once:\n{self.logs_tail()}")

    def _start_munge(self) -> None:
        if len(str(self.munge_socket)) > 100:  # sockaddr_un holds 108 bytes
            raise RuntimeError(f"socket path too long for munged: {self.munge_socket}")
        key = self.root / "munge" / "munge.key"
        mungekey = which("mungekey")
        if mungekey:  # munge >= 0.5.14 (Debian 11 and later)
            subprocess.run(
                [mungekey, "--create", f"--keyfile={key}"], check=True, capture_output=True
            )
        else:  # older munge's create-munge-key only writes /etc/munge: a key is random bytes
            key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn(
            "munged",
            which("munged"),
            "--foreground",
            "--force",  # root, and pytest's /tmp parents: accept what munged would warn about
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--pid-file={self.root / 'munge' / 'munged.pid'}",
            f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            f"--log-file={self.logs / 'munged.log'}",
        )
        deadline = time.monotonic() + 20
        while not self.munge_socket.exists():
            if time.monotonic() > deadline or self.procs["munged"].poll() is not None:
                raise RuntimeError(f"munged did not come up:\n{self.logs_tail()}")
            time.sleep(0.2)

    def _write_conf(self) -> None:
        r = self.root
        ctld_port, slurmd_port = free_ports(2)
        self.conf.write_text(
            f"""\
# Written by tests/cluster/slurm_cluster.py: one node, this machine, no accounting.
ClusterName=snaketest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "state" / "slurmctld.pid"}
SlurmdPidFile={r / "spool" / "slurmd.pid"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
ReturnToService=2
# finished jobs stay in squeue this long: the plugin polls squeue (no sacct without slurmdbd)
MinJobAge={MIN_JOB_AGE}
InactiveLimit=0
KillWait=5
# trust the node line below rather than draining the node on a hardware mismatch
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _write_shim(self) -> None:
        """srun that finds this cluster's slurm.conf.

        The slurm-jobstep executor (inside each job) drops every SLURM_* variable, SLURM_CONF
        included, before it calls `srun`; a real cluster's /etc/slurm/slurm.conf makes that
        harmless, this private cluster needs the variable put back.
        """
        srun = self.bin / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec {which("srun")} "$@"\n')
        srun.chmod(0o755)

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.logs_tail()}")
            state = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).strip()
            if state.endswith(" idle"):
                return
            time.sleep(1)
        raise RuntimeError(
            f"node not idle after {timeout} s (sinfo: {state!r}):\n{self.logs_tail()}"
        )

    def logs_tail(self, n: int = 3000) -> str:
        parts = []
        for f in sorted(self.logs.glob("*")):
            text = f.read_text(errors="replace")
            parts.append(f"--- {f.name}\n{text[-n:]}")
        return "\n".join(parts)
