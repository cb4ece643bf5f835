"""The launch recipes in launch/: manifests parse and carry the fields we rely on, the scripts issue the commands
the docs promise (run against stub `ray`/`srun`/`rayscale` executables), and the example configs both validate and
fit the clusters the recipes build."""

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from rayscale.config_loading import load_config
from rayscale.plan import plan_placement, require_fit
from tests.nodes import node

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
CONFIGS = sorted((LAUNCH / "configs").glob("*.yaml"))
LOOPBACK = "127.0.0.1"


def load_yaml(name):
    return yaml.safe_load((LAUNCH / name).read_text())


def test_example_configs_validate_and_use_every_gpu():
    assert [c.name for c in CONFIGS] == ["1node-8gpu-colocated.yaml", "1node-8gpu.yaml", "4node-8gpu.yaml",
                                         "smollm2-cpu.yaml"]
    gpus = {c.name: plan_placement(load_config(c)).total().get("GPU", 0) for c in CONFIGS}
    assert gpus == {"1node-8gpu-colocated.yaml": 8, "1node-8gpu.yaml": 8, "4node-8gpu.yaml": 32,
                    "smollm2-cpu.yaml": 0}  # as their comments say


def test_the_cpu_example_fits_this_projects_2_core_machine():
    plan = plan_placement(load_config(LAUNCH / "configs/smollm2-cpu.yaml"))
    assert "vLLM on CPU" in plan.role("rollout").note
    require_fit(plan, [node("cpu-node", CPU=2)])


@pytest.mark.parametrize("name", ["1node-8gpu.yaml", "1node-8gpu-colocated.yaml"])
def test_one_node_configs_fit_one_8_gpu_node(name):
    plan = plan_placement(load_config(LAUNCH / "configs" / name))
    require_fit(plan, [node("gpu-node-0", CPU=96, GPU=8)])


def test_the_colocated_recipe_trains_and_generates_on_seven_gpus():
    cfg = load_config(LAUNCH / "configs/1node-8gpu-colocated.yaml")
    plan = plan_placement(cfg)
    assert plan.role("rollout").shares == "learner" and plan.role("learner").bundle["GPU"] == 1
    assert cfg.sync.resolve_transport(cfg.cluster.colocate) == "ipc"


# --------------------------------------------------------------------------------------------------- cluster launcher
def ray_schema():
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_cluster_launcher_yaml_matches_rays_schema_and_binds_dashboard_to_loopback():
    cfg = load_yaml("ray-cluster.yaml")
    jsonschema.validate(cfg, ray_schema())
    with pytest.raises(jsonschema.ValidationError):  # the schema is strict, so the check above means something
        jsonschema.validate({**cfg, "head_node_typo": "head"}, ray_schema())
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert sum(t.get("min_workers", 0) for t in types.values()) <= cfg["max_workers"]
    head_cmd = " ".join(cfg["head_start_ray_commands"])
    assert f"--dashboard-host={LOOPBACK}" in head_cmd and "0.0.0.0" not in head_cmd
    for cmds in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):  # one auth mode on every node
        assert "export RAY_AUTH_MODE=token;" in cmds[-1] and cmds[-1].index("RAY_AUTH_MODE") < cmds[-1].index("ray start")
    assert "/home/ray/.ray/auth_token" in cfg["file_mounts"]
    assert {"gen_node", "train_node"} <= {k for t in types.values() for k in t["resources"]}


def test_cluster_launcher_nodes_hold_the_four_node_config():
    cfg = load_yaml("ray-cluster.yaml")
    nodes = [node("head", is_head=True, **cfg["available_node_types"][cfg["head_node_type"]]["resources"])]
    for name, t in cfg["available_node_types"].items():
        nodes += [node(f"{name}-{i}", **t["resources"]) for i in range(t.get("min_workers", 0))]
    assignment = require_fit(plan_placement(load_config(LAUNCH / "configs/4node-8gpu.yaml")), nodes)
    assert {n.split("-")[0] for n in assignment.bundles["rollout"]} == {"gen_gpu"}
    assert {n.split("-")[0] for n in assignment.bundles["learner"]} == {"train_gpu"}
    # The variant its comments and docs/launch.md describe: the teacher on 2 GPUs of the gen nodes.
    local_teacher = ["teacher.backend=local", "teacher.local.backend=vllm", "rollout.num_workers=7",
                     "cluster.teacher={num_gpus: 2, num_cpus: 8, node_resource: gen_node}"]
    assignment = require_fit(plan_placement(load_config(LAUNCH / "configs/4node-8gpu.yaml", local_teacher)), nodes)
    assert assignment.bundles["teacher"][0].startswith("gen_gpu")


# --------------------------------------------------------------------------------------------------- KubeRay
def kuberay_nodes(job):
    """The Ray nodes KubeRay will start: rayStartParams (strings, as KubeRay requires) per pod."""
    spec = job["spec"]["rayClusterSpec"]
    groups = [("head", 1, spec["headGroupSpec"])] + [(g["groupName"], g["replicas"], g)
                                                     for g in spec["workerGroupSpecs"]]
    nodes = []
    for name, replicas, group in groups:
        params = group["rayStartParams"]
        assert all(isinstance(v, str) for v in params.values()), f"{name}: rayStartParams values must be strings"
        res = {"CPU": float(params["num-cpus"]), "GPU": float(params.get("num-gpus", 0))}
        if "resources" in params:  # KubeRay pastes it into `ray start --resources=...`: read it as the shell will
            (text,) = shlex.split(params["resources"])
            res.update(json.loads(text))
        nodes += [node(f"{name}-{i}", is_head=name == "head", **res) for i in range(replicas)]
    return nodes


def test_kuberay_rayjob_has_the_fields_we_rely_on():
    job = load_yaml("kuberay-rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    entry = shlex.split(spec["entrypoint"])
    assert entry[:2] == ["rayscale", "train"] and entry[2].startswith("/configs/")
    assert (LAUNCH / "configs" / Path(entry[2]).name).is_file() and "cluster.address=auto" in entry
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["image"] and {"dashboard", "gcs-server"} <= {p["name"] for p in head["containers"][0]["ports"]}
    mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    assert any(v["name"] == mounts["/configs"] and "configMap" in v for v in head["volumes"])
    # SidecarMode: the submitter talks to 127.0.0.1 inside the head pod; KubeRay's own constraints on it.
    assert spec["submissionMode"] == "SidecarMode"
    assert "submitterPodTemplate" not in spec and "submitterConfig" not in spec
    assert head.get("restartPolicy", "Never") == "Never"
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == group["rayStartParams"]["num-gpus"]
        assert float(limits["cpu"]) >= float(group["rayStartParams"]["num-cpus"])


def test_kuberay_dashboard_is_loopback_or_token_authenticated():
    cluster = load_yaml("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]
    host = cluster["headGroupSpec"]["rayStartParams"].get("dashboard-host", "0.0.0.0")  # KubeRay's default
    if host != LOOPBACK:
        assert cluster.get("authOptions", {}).get("mode") == "token"
        major, minor, *_ = (int(x) for x in cluster["rayVersion"].split("."))
        assert (major, minor) >= (2, 52), "Ray token authentication needs Ray >= 2.52"


def test_kuberay_pods_hold_the_four_node_config():
    job = load_yaml("kuberay-rayjob.yaml")
    assignment = require_fit(plan_placement(load_config(LAUNCH / "configs/4node-8gpu.yaml")), kuberay_nodes(job))
    assert {n.split("-")[0] for n in assignment.bundles["rollout"]} == {"gen"}
    assert {n.split("-")[0] for n in assignment.bundles["learner"]} == {"train"}


# --------------------------------------------------------------------------------------------------- scripts
@pytest.mark.parametrize("script", ["local.sh", "slurm.sbatch"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(LAUNCH / script)], check=True)


def stub_bin(tmp_path, log):
    """Executables that only record how they were called (srun runs its command, as on a real node)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "ray": f'echo "ray $* |auth=${{RAY_AUTH_MODE:-}} |token=${{RAY_AUTH_TOKEN:-}}'
               f'${{SLURMD_NODENAME:+ @$SLURMD_NODENAME}}" >> {log}',
        # `rayscale plan --local-num-cpus` answers 7; `rayscale status` fails when STUB_FIT=no.
        "rayscale": f'echo "rayscale $* |auth=${{RAY_AUTH_MODE:-}} |token=${{RAY_AUTH_TOKEN:-}}" >> {log}; '
                    'if [[ "$1" == plan ]]; then echo 7; fi; '
                    'if [[ "$1" == status && "${STUB_FIT:-}" == no ]]; then echo "does not fit" >&2; exit 2; fi',
        "scontrol": 'printf "gpu-a\\ngpu-b\\ngpu-c\\ngpu-d\\n"',
        "hostname": 'echo "10.0.0.11"',
        "srun": 'while [[ "$1" == -* ]]; do [[ "$1" == -w ]] && { export SLURMD_NODENAME=$2; shift; }; shift; done; '
                '"$@"',
    }
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_NUM_CPUS", "RAY_NUM_GPUS", "RAYSCALE_REUSE_RAY")}
    return {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_local_script_binds_to_loopback_checks_the_fit_then_submits(tmp_path):
    log = tmp_path / "calls.log"
    env = stub_bin(tmp_path, log)
    subprocess.run(["bash", str(LAUNCH / "local.sh"), "launch/configs/1node-8gpu.yaml", "algo.iterations=3"],
                   env=env, check=True, cwd=tmp_path)
    calls = log.read_text().splitlines()
    assert [c.split()[:2] for c in calls] == [["ray", "get-auth-token"], ["rayscale", "plan"], ["ray", "start"],
                                              ["rayscale", "status"], ["ray", "job"], ["ray", "stop"]]
    assert all("|auth=token" in c for c in calls)  # one authentication mode for the head and every client
    # The head is sized for the run, as `rayscale train` sizes a local Ray: the plan of the same config and overrides.
    assert "launch/configs/1node-8gpu.yaml algo.iterations=3 --local-num-cpus" in calls[1]
    assert f"--dashboard-host={LOOPBACK}" in calls[2] and "--head" in calls[2] and "--num-cpus=7" in calls[2]
    assert "--address 127.0.0.1:6379" in calls[3] and "algo.iterations=3" in calls[3]
    submit = calls[4]
    assert f"--address http://{LOOPBACK}:8265" in submit and "--working-dir ." in submit
    train = submit.split(" -- ", 1)[1].split()
    assert train[:3] == ["rayscale", "train", "launch/configs/1node-8gpu.yaml"] and "cluster.address=auto" in train
    assert f"tracking.run_dir={ROOT}/runs/1node-8gpu" in train  # absolute: the job runs in a copy of the checkout


def test_local_script_ray_num_cpus_wins_over_the_plan(tmp_path):
    log = tmp_path / "calls.log"
    env = {**stub_bin(tmp_path, log), "RAY_NUM_CPUS": "3", "RAY_NUM_GPUS": "1"}
    subprocess.run(["bash", str(LAUNCH / "local.sh")], env=env, check=True, cwd=tmp_path)
    calls = log.read_text().splitlines()
    assert not any(c.startswith("rayscale plan") for c in calls)
    (start,) = [c for c in calls if c.startswith("ray start")]
    assert "--num-cpus=3" in start and "--num-gpus=1" in start


def test_local_script_that_does_not_fit_says_to_set_ray_num_cpus_and_submits_nothing(tmp_path):
    log = tmp_path / "calls.log"
    env = {**stub_bin(tmp_path, log), "STUB_FIT": "no"}
    r = subprocess.run(["bash", str(LAUNCH / "local.sh")], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "RAY_NUM_CPUS=7" in r.stderr and "set RAY_NUM_CPUS" in r.stderr  # what the head offered, what to do
    calls = log.read_text().splitlines()
    assert not any(c.startswith("ray job") for c in calls) and calls[-1].startswith("ray stop")
    r = subprocess.run(["bash", str(LAUNCH / "local.sh")], env={**env, "RAYSCALE_REUSE_RAY": "1"}, cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "RAYSCALE_REUSE_RAY" in r.stderr and "--num-cpus" in r.stderr


def test_local_plan_cpus_are_what_a_local_train_declares():
    from rayscale.cli import main
    from rayscale.cluster import local_num_cpus

    cores = os.cpu_count() or 1
    for config, expected in ((None, max(cores, 5)), (LAUNCH / "configs/1node-8gpu.yaml", max(cores, 72))):
        assert local_num_cpus(load_config(config)) == expected  # 4.5 CPUs for the default, 72 for 1node-8gpu
    assert local_num_cpus(load_config(None, ["cluster.num_cpus=3"])) == 3
    r = subprocess.run([sys.executable, "-m", "rayscale.cli", "plan", "algo.iterations=2", "--local-num-cpus"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert (r.returncode, r.stdout) == (0, f"{max(cores, 5)}\n"), r.stderr
    r = subprocess.run([sys.executable, "-m", "rayscale.cli", "plan", "algo.iteratons=2", "--local-num-cpus"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "iteratons" in r.stderr and "Traceback" not in r.stderr
    assert main(["plan"]) == 0


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _kill_processes_naming(needle):
    """End the Ray processes this test started (their command lines hold its temp dir) and their children; never
    `ray stop`, which would stop every Ray of this user on the machine."""
    import psutil

    ours = [p for p in psutil.process_iter(["cmdline", "uids"]) if p.pid != os.getpid()
            and p.info["uids"] and p.info["uids"].real == os.getuid()
            and any(needle in a for a in (p.info["cmdline"] or []))]
    procs = {p.pid: p for p in ours}
    for p in ours:
        try:
            procs.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    for p in procs.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=15)
    for p in alive:
        p.kill()


@pytest.mark.ray
def test_local_script_with_the_default_config_fits_this_machine_for_real(tmp_path):
    """The real `ray start --head` and `rayscale status` of local.sh on this machine (2 cores: the default run's
    4.5 CPUs fit only because the head is sized from the plan); only `ray job submit` and `ray stop` are stubbed."""
    import shutil
    import tempfile

    real_ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    temp_dir = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths live under it
    gcs, dashboard, client, agent = _free_ports(4)
    log, home, bin_dir = tmp_path / "calls.log", tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    (bin_dir / "ray").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "ray $*" >> {log}\n'
        'case "$1" in\n'
        "  job|stop) exit 0 ;;\n"  # submit nothing; the test stops its own head below
        f'  start) shift; exec {real_ray} start "$@" --temp-dir={temp_dir} --ray-client-server-port={client} '
        f"--dashboard-agent-listen-port={agent} ;;\n"
        f'  *) exec {real_ray} "$@" ;;\n'
        "esac\n")
    (bin_dir / "ray").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(home),
           "RAY_PORT": str(gcs), "RAY_DASHBOARD_PORT": str(dashboard)}
    env.pop("RAY_NUM_CPUS", None)
    env.pop("RAY_ADDRESS", None)
    try:
        r = subprocess.run(["bash", str(LAUNCH / "local.sh")], env=env, capture_output=True, text=True, timeout=180)
    finally:
        _kill_processes_naming(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    cores = os.cpu_count() or 1
    assert f"head CPU {max(cores, 5)}/{max(cores, 5)}" in r.stdout and "fits: every actor has a place" in r.stdout
    calls = log.read_text().splitlines()
    assert f"--num-cpus={max(cores, 5)}" in calls[1] and calls[2].startswith("ray job submit")


def test_slurm_script_starts_head_and_labelled_workers_then_submits(tmp_path):
    log = tmp_path / "calls.log"
    env = {**stub_bin(tmp_path, log), "SLURM_JOB_NODELIST": "gpu-[a-d]", "SLURM_SUBMIT_DIR": str(ROOT),
           "SLURM_JOB_ID": "42", "SLURM_CPUS_PER_TASK": "96", "SLURM_GPUS_PER_TASK": "8"}
    subprocess.run(["bash", str(LAUNCH / "slurm.sbatch"), "algo.iterations=3"], env=env, check=True, cwd=tmp_path)
    deadline = time.monotonic() + 10
    while True:  # the `ray start` steps run in the background, as they do under Slurm
        calls = log.read_text().splitlines()
        starts = sorted((c for c in calls if c.startswith("ray start")), key=lambda c: c.rsplit("@", 1)[1])
        if len(starts) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [c.rsplit("@", 1)[1] for c in starts] == ["gpu-a", "gpu-b", "gpu-c", "gpu-d"]
    assert "--head" in starts[0] and f"--dashboard-host={LOOPBACK}" in starts[0]
    assert all("--num-gpus=8" in c and "--num-cpus=96" in c for c in starts)  # what the allocation gives a task
    assert all("--address=10.0.0.11:6379" in c for c in starts[1:])
    labels = [json.loads(re.search(r"--resources=(\{.*\})", c).group(1)) for c in starts]
    assert labels == [{"gen_node": 1}, {"gen_node": 1}, {"train_node": 1}, {"train_node": 1}]
    tokens = {re.search(r"\|token=(\S*)", c).group(1) for c in calls}
    assert len(tokens) == 1 and len(tokens.pop()) == 64  # one fresh token, shared by every node and client
    assert all("|auth=token" in c for c in calls)
    status = next(c for c in calls if c.startswith("rayscale status"))
    assert "--wait-nodes 4" in status and "--address 10.0.0.11:6379" in status
    submit = next(c for c in calls if c.startswith("ray job submit"))
    assert submit.startswith(f"ray job submit --address http://{LOOPBACK}:8265")
    assert "rayscale train launch/configs/4node-8gpu.yaml algo.iterations=3 cluster.address=auto" in submit
    # The allocation the script asks for holds the config it submits.
    header = (LAUNCH / "slurm.sbatch").read_text()
    n = int(re.search(r"#SBATCH --nodes=(\d+)", header).group(1))
    cpus = float(re.search(r"#SBATCH --cpus-per-task=(\d+)", header).group(1))
    gpus = float(re.search(r"#SBATCH --gpus-per-task=(\d+)", header).group(1))
    nodes = [node(f"n{i}", CPU=cpus, GPU=gpus, **label) for i, label in enumerate(labels[:n])]
    require_fit(plan_placement(load_config(LAUNCH / "configs/4node-8gpu.yaml")), nodes)


def test_slurm_script_lets_ray_count_gpus_asked_with_gres(tmp_path):
    log = tmp_path / "calls.log"
    env = {**stub_bin(tmp_path, log), "SLURM_JOB_NODELIST": "gpu-[a-b]", "SLURM_SUBMIT_DIR": str(ROOT),
           "SLURM_JOB_ID": "43", "SLURM_CPUS_PER_TASK": "8"}
    env.pop("SLURM_GPUS_PER_TASK", None)
    subprocess.run(["bash", str(LAUNCH / "slurm.sbatch")], env=env, check=True, cwd=tmp_path)
    deadline = time.monotonic() + 10
    while len(starts := [c for c in log.read_text().splitlines() if c.startswith("ray start")]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert all("--num-cpus=8" in c and "--num-gpus" not in c for c in starts)  # not a made-up 8 GPUs


def test_docs_give_the_commands_of_every_recipe():
    doc = (ROOT / "docs/launch.md").read_text()
    for needle in ("launch/local.sh", "ray start --head", "ray job submit --address http://127.0.0.1:8265",
                   "ray up launch/ray-cluster.yaml", "ray dashboard launch/ray-cluster.yaml",
                   "kubectl apply -f launch/kuberay-rayjob.yaml", "sbatch launch/slurm.sbatch", "rayscale status",
                   "ssh -L 8265:127.0.0.1:8265", "--dashboard-host"):
        assert needle in doc, needle
