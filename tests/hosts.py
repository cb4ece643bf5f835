"""Hosts on this machine for the `multihost` and `slurm` tests: each a network namespace with its own address (a
veth pair between two of them; no route anywhere else), its own hostname (UTS namespace) and a private /tmp (mount
namespace), so that what passes on a `ray.cluster_utils.Cluster` (one address, one filesystem) but fails on a lab's
cluster fails here too. One directory is shared: bind-mounted at the same path on every host, as a lab's shared
file system would be.

    with two_hosts("rsmh", shared=tmp_path / "shared") as (head, worker):   # hosts rsmh<pid>n0, rsmh<pid>n1
        head.run(["ray", "start", "--head", f"--node-ip-address={head.ip}", ...], env=env)
        worker.kill_all()        # every process of the host but its anchor: a crashed node

Each host is held by an anchor process (`sleep`) whose namespaces every command enters with `nsenter`. Leaving the
block kills every process in each namespace (`ip netns pids`), then deletes the namespaces: nothing is left even
when the test failed. Needs root, iproute2 and util-linux (nsenter, unshare); `require_tools` skips without them,
and fails in CI (CI=true), where a skip would hide that the tests did not run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SUBNET = "10.231"  # 10.231.N.1 and 10.231.N.2: only ever configured inside the namespaces these tests create


def require_tools(*tools: str) -> None:
    """Skip (fail under CI=true) unless this runs as root with every tool on PATH."""
    missing = [t for t in ("ip", "nsenter", "unshare", *tools) if shutil.which(t) is None]
    why = (f"missing {', '.join(missing)}" if missing else "not root" if os.geteuid() != 0 else None)
    if why is None:
        return
    message = (f"{why}: these tests need root, iproute2 and util-linux ({' '.join(tools)} too); "
               "`.ci/run` installs them (apt-get install -y iproute2 slurm-wlm munge)")
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)


@dataclass
class Host:
    name: str  # the namespace's name and its hostname
    ip: str
    anchor: subprocess.Popen

    def _enter(self, cmd: list[str], cwd: str | Path | None) -> list[str]:
        # Entering a mount namespace moves to its root directory: `--wd` keeps the directory asked for.
        wd = [f"--wd={cwd}"] if cwd is not None else []
        return ["nsenter", f"--target={self.anchor.pid}", "--mount", "--uts", "--net", *wd, "--", *cmd]

    def run(self, cmd: list[str], *, env: dict | None = None, timeout: float = 120, check: bool = False,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        """Run `cmd` on this host; stdout and stderr together in `.stdout`."""
        return subprocess.run(self._enter(cmd, cwd), env=env, timeout=timeout, check=check, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def popen(self, cmd: list[str], *, env: dict | None = None, log: Path, cwd: str | Path | None = None):
        """Start `cmd` on this host in the background, its output in `log`."""
        with open(log, "ab") as out:
            return subprocess.Popen(self._enter(cmd, cwd), env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def pids(self) -> list[int]:
        """Every process in this host's network namespace but the anchor."""
        r = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in r.stdout.split() if int(p) != self.anchor.pid]

    def kill_all(self, sig: int = signal.SIGKILL, wait_s: float = 10.0) -> int:
        """Kill every process of the host but its anchor (a node whose processes all died); how many there were."""
        killed = 0
        deadline = time.monotonic() + wait_s
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            killed = max(killed, len(pids))
            time.sleep(0.2)
        return killed


_ANCHOR = r"""
set -e
hostname "$HOST_NAME"
mount --bind "$HOSTS_FILE" /etc/hosts
mkdir -p /mnt/.rs-shared && mount --bind "$SHARED" /mnt/.rs-shared   # held while /tmp is covered
mount -t tmpfs -o size=2g,mode=1777 rs-tmp /tmp
mkdir -p "$SHARED" && mount --move /mnt/.rs-shared "$SHARED"
ip link set lo up
echo ready
exec sleep infinity
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def two_hosts(prefix: str, shared: Path, subnet_index: int = 0):
    """Two hosts `{prefix}{pid}n0` (10.231.N.1) and `...n1` (10.231.N.2) joined by a veth pair; `shared` (a
    directory outside the namespaces) appears at the same path on both. Torn down on leaving, whatever happened."""
    shared.mkdir(parents=True, exist_ok=True)
    # The pid keeps two test sessions on one machine (a CI run beside a developer's) apart; names stay short
    # enough for an interface name (15 characters) with a "v" appended.
    names = [f"{prefix}{os.getpid() % 100000}n{i}" for i in range(2)]
    ips = [f"{SUBNET}.{subnet_index}.{i + 1}" for i in range(2)]
    hosts_file = shared.parent / f"{prefix}-hosts"
    hosts_file.write_text("127.0.0.1 localhost\n" + "".join(f"{ip} {n}\n" for ip, n in zip(ips, names)))
    hosts: list[Host] = []
    try:
        for name in names:
            _ip("netns", "add", name)
        _ip("link", "add", f"{names[0]}v", "netns", names[0], "type", "veth", "peer", "name", f"{names[1]}v",
            "netns", names[1])
        for name, ip in zip(names, ips):
            _ip("-n", name, "addr", "add", f"{ip}/24", "dev", f"{name}v")
            _ip("-n", name, "link", "set", f"{name}v", "up")
        for name in names:
            anchor = subprocess.Popen(
                # nsenter rather than `ip netns exec`, which remounts /sys and so hides /sys/fs/cgroup (slurmd
                # needs it)
                ["nsenter", f"--net=/run/netns/{name}", "unshare", "--mount", "--uts", "--propagation", "private",
                 "bash", "-c", _ANCHOR],
                env={**os.environ, "HOST_NAME": name, "HOSTS_FILE": str(hosts_file), "SHARED": str(shared)},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            hosts.append(Host(name, ips[len(hosts)], anchor))
            line = anchor.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"host {name} did not come up: {line}{anchor.stdout.read()}")
        yield hosts
    finally:
        for host in hosts:
            host.kill_all(wait_s=15)
        for host in hosts:
            host.anchor.kill()
            host.anchor.wait(timeout=10)
        for name in names:
            for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                      text=True).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)  # takes the veth pair with it
        hosts_file.unlink(missing_ok=True)


def netns_left(names: list[str]) -> list[str]:
    """Those of `names` that still exist as network namespaces (none after a test)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in names]
