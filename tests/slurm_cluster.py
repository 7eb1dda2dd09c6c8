"""A real SLURM cluster on this one machine for the tests: munged, slurmctld and one slurmd per
node (several nodes share the host, each slurmd on its own port), with their own config, state,
spool, logs and socket under one folder, on free ports, and job ids starting at a random number, so
that it clashes neither with a system SLURM nor with another test session on the same machine.

``python -m tests.slurm_cluster DIR [NODES]`` starts one and keeps it up until Ctrl-C or SIGTERM (for development:
``export SLURM_CONF=DIR/slurm.conf`` in another shell, then sbatch/squeue/scancel as usual).
"""

from __future__ import annotations

import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "scancel", "sinfo")
# Debian installs the daemons in /usr/sbin, which a non-root PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def missing_programs() -> list[str]:
    return [name for name in DAEMONS + CLIENTS if shutil.which(name, path=SEARCH_PATH) is None]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


SLURM_CONF = """\
ClusterName=dynagentest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
FirstJobId={first_job_id}
# No cgroups in a container: processes tracked by parentage, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# scancel: SIGTERM, then SIGKILL after KillWait seconds (the job script's cleanup must fit).
KillWait=20
MinJobAge=600
SchedulerParameters=sched_interval=2
{node_lines}
PartitionName=debug Nodes={node_names} Default=YES MaxTime=INFINITE State=UP
"""
NODE = "NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} RealMemory=2000 State=UNKNOWN"


class LocalSlurm:
    """``start()`` brings the daemons up and waits until every node is idle; ``env`` is the
    environment for sbatch/squeue/scancel; ``stop()`` ends the daemons (jobs still running die with
    their slurmd). The machine's cores are split between the nodes."""

    def __init__(self, root: Path, nodes: int = 1):
        self.root = Path(root)
        self.processes: list[subprocess.Popen] = []
        self.host = socket.gethostname().split(".")[0]
        self.nodes = [f"node{index}" for index in range(1, nodes + 1)]
        self.cpus_per_node = max(1, (os.cpu_count() or 1) // nodes)
        self.env = {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf"), "PATH": SEARCH_PATH}

    def _daemon(self, name: str, *arguments: str) -> None:
        command = [shutil.which(name.partition("-")[0], path=SEARCH_PATH), *arguments]
        log = open(self.root / f"{name}.stdout", "ab")
        self.processes.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def start(self, timeout_s: float = 60) -> "LocalSlurm":
        munge = self.root / "munge"
        for folder in (munge, self.root / "state", *(self.root / f"spool-{node}" for node in self.nodes)):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._daemon("munged", "--foreground", "--force", f"--socket={munge}/munge.socket",
                     f"--key-file={key}", f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                     f"--seed-file={munge}/munged.seed")
        node_lines = "\n".join(NODE.format(name=node, host=self.host, port=free_port(), cpus=self.cpus_per_node) for node in self.nodes)
        (self.root / "slurm.conf").write_text(SLURM_CONF.format(
            host=self.host, root=self.root, user=getpass.getuser(), ctld_port=free_port(),
            first_job_id=random.randrange(10**5, 10**7), node_lines=node_lines, node_names=",".join(self.nodes)))
        self._wait(lambda: (munge / "munge.socket").exists(), timeout_s, "munged did not create its socket")
        self._daemon("slurmctld", "-D", "-i")
        for node in self.nodes:
            self._daemon(f"slurmd-{node}", "-D", "-N", node)
        self._wait(lambda: self.node_states() == ["idle"] * len(self.nodes), timeout_s, "the nodes did not become idle")
        return self

    def node_states(self) -> list[str]:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return result.stdout.split() if result.returncode == 0 else []

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"--- {path.name}\n{path.read_text()[-2000:]}" for path in sorted(self.root.glob("*.log*")) + sorted(self.root.glob("*.stdout")))
                raise RuntimeError(f"single-node SLURM: {what} (exited: {dead or 'none'})\n{logs}")
            time.sleep(0.5)

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, ExitCode, ...); {} once the record is gone."""
        result = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=self.env, capture_output=True, text=True)
        fields = {}
        for item in result.stdout.split():
            key, _, value = item.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait_for_job(self, job_id: str, timeout_s: float, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            fields = self.job(job_id)
            if fields.get("JobState") in states:
                return fields
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {fields.get('JobState')} after {timeout_s:.0f} s")
            time.sleep(1)

    def stop(self) -> None:
        for process in reversed(self.processes):  # slurmd, slurmctld, then munged
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


if __name__ == "__main__":
    cluster = LocalSlurm(Path(sys.argv[1]).resolve(), nodes=int(sys.argv[2]) if len(sys.argv) > 2 else 1).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # after start: the daemons inherit the mask
    print(f"export SLURM_CONF={cluster.root / 'slurm.conf'}", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    cluster.stop()
