"""`sbatch launch/slurm.sbatch` on a real Slurm (Debian's slurm-wlm and munge): slurmctld and two slurmd nodes on
this machine, each node a network + UTS namespace with its own address, hostname and /tmp (tests/hosts.py), the
submit directory's run folder on a directory both see (the lab's shared file system). A CPU config, no GPUs: the job
starts the Ray head on the first node and a Ray worker on the second, submits a short `rayscale train` and exits 0.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hosts import netns_left, require_tools, two_hosts
from tests.test_loop import TINY

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
PREFIX = "rssl"
ITERATIONS = 2
# The CPU config: rollout on the gen node (the head, GEN_NODES=1), the learner on the train node.
CPU_CONFIG = """\
# A CPU run of the built-in tiny model on two Slurm nodes: rollout on the gen node, learner ranks on the train node.
cluster:
  rollout: {node_resource: gen_node, num_cpus: 0.5}
  learner: {node_resource: train_node, num_cpus: 0.5}
  teacher: {num_cpus: 0.1}
  verifier: {num_cpus: 0.1}
"""
OVERRIDES = [o for o in TINY if not o.startswith("cluster.")] + [
    "algo.sft.steps=20", "algo.eval_every=0", f"algo.iterations={ITERATIONS}"]


def slurm_conf(shared: Path, nodes) -> str:
    node_lines = "".join(f"NodeName={h.name} NodeAddr={h.ip} CPUs=2 State=UNKNOWN\n" for h in nodes)
    return f"""\
ClusterName=rstest
SlurmctldHost={nodes[0].name}({nodes[0].ip})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={shared}/munge/socket
StateSaveLocation={shared}/slurmctld
SlurmctldPidFile={shared}/slurmctld.pid
SlurmctldLogFile={shared}/slurmctld.log
SlurmdSpoolDir=/tmp/slurmd
SlurmdPidFile=/tmp/slurmd.pid
SlurmdLogFile={shared}/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=5
{node_lines}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def start_munge(shared: Path, log: Path) -> subprocess.Popen:
    d = shared / "munge"
    d.mkdir(mode=0o755)
    subprocess.run(["mungekey", "--create", f"--keyfile={d}/munge.key"], check=True, capture_output=True)
    munged = subprocess.Popen(["munged", "--foreground", "--force", f"--socket={d}/socket",
                               f"--key-file={d}/munge.key", f"--pid-file={d}/munged.pid",
                               f"--seed-file={d}/munged.seed", f"--log-file={log}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (d / "socket").exists():
        assert munged.poll() is None and time.monotonic() < deadline, log.read_text() if log.exists() else ""
        time.sleep(0.1)
    return munged


def wait_idle(head, env, names, timeout_s=90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        out = head.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=env, timeout=30).stdout
        states = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
        if all(states.get(n) == "idle" for n in names):
            return
        assert time.monotonic() < deadline, f"slurm nodes not idle: {out}"
        time.sleep(1)


def test_slurm_sbatch_runs_the_recipe_on_two_nodes(tmp_path):
    require_tools("slurmctld", "slurmd", "sbatch", "munged", "mungekey")
    shared = tmp_path / "shared"
    shared.mkdir()
    munged = start_munge(shared, tmp_path / "munged.log")
    started = time.monotonic()
    try:
        with two_hosts(PREFIX, shared, subnet_index=1) as hosts:
            names = [h.name for h in hosts]
            head = hosts[0]
            conf = shared / "slurm.conf"
            conf.write_text(slurm_conf(shared, hosts))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
            env.update(SLURM_CONF=str(conf), PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
            head.popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env, log=tmp_path / "slurmctld.out")
            (shared / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")
            for h in hosts:
                h.run(["mkdir", "-p", "/tmp/slurmd"], check=True)  # the spool: on the node's own /tmp
                h.popen(["slurmd", "-D", "-N", h.name, "-f", str(conf)], env=env, log=tmp_path / f"{h.name}.out")
            wait_idle(head, env, [h.name for h in hosts])
            print(f"\nslurm up: {time.monotonic() - started:.0f}s")

            (shared / "cpu.yaml").write_text(CPU_CONFIG)
            job_env = {**env, "CONFIG": str(shared / "cpu.yaml"), "GEN_NODES": "1",
                       "RAYSCALE_RUN_DIR": str(shared / "run")}
            r = head.run(["sbatch", "--wait", "--nodes=2", "--cpus-per-task=2", "--gpus-per-task=0",
                          f"--output={shared}/job-%j.out",
                          "launch/slurm.sbatch", *OVERRIDES], env=job_env, cwd=ROOT, timeout=540)
            outputs = sorted(shared.glob("job-*.out"))
            out = outputs[-1].read_text() if outputs else ""
            print(f"sbatch done ({r.returncode}): {time.monotonic() - started:.0f}s")
            assert r.returncode == 0, f"{r.stdout}\n--- job output ---\n{out[-6000:]}"
            assert f"ray head on {head.name} ({head.ip}:6379); 2 node(s)" in out, out[-3000:]
            assert re.search(r"Job '.*' succeeded", out), out[-3000:]
            # `rayscale status` in the job saw both nodes: the learner on the train node (the second), rollout on
            # the gen node (the head); only those nodes carry those resources, so Ray placed them there too.
            worker = hosts[1]
            assert "2 alive node(s)" in out and re.search(rf"\s{re.escape(worker.ip)}\s+CPU 2/2", out), out[-3000:]
            assert re.search(rf"ranks 0-1\s+-> node \w+ \({re.escape(worker.ip)}\)", out), out[-3000:]
            assert re.search(rf"worker 0\s+-> node \w+ \({re.escape(head.ip)}\)", out), out[-3000:]
            rows = [json.loads(line) for line in (shared / "run" / "metrics.jsonl").read_text().splitlines()]
            assert [r["iteration"] for r in rows] == list(range(1, ITERATIONS + 1))
    finally:
        munged.kill()
        munged.wait(timeout=10)
    assert netns_left(names) == []
