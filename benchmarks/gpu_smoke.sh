#!/usr/bin/env bash
# GPU smoke run: on a machine with a CUDA GPU (one is enough) and no internet, in about 9 minutes, run every
# `gpu` test and the GPU variants of the weight-sync, rollout and learner benchmarks, and write one JSON.
#
#   make gpu-smoke                          # = OUT=gpu_smoke bash benchmarks/gpu_smoke.sh
#   OUT=/tmp/smoke BUDGET_S=300 bash benchmarks/gpu_smoke.sh
#
# Steps (each under `timeout`, each recorded in the JSON whatever happens; a failure never stops the run):
#   environment   probe the candidate interpreters (GPU_SMOKE_PYTHON, else $VIRTUAL_ENV, .venv, .venv-gpu-smoke,
#                 python3, python, /opt/torch/.venv/bin/python3, /opt/conda/bin/python) for torch, CUDA, NCCL and
#                 rayscale's dependencies; take the first with CUDA and the fewest missing; if required modules
#                 are missing, install: wheels from GPU_SMOKE_WHEELS (default ./.whl when it holds *.whl) with
#                 `pip --no-index --no-deps --target`, else `pip install -e .[dev]` (into that venv, or into
#                 .venv-gpu-smoke made with --system-site-packages); offline that fails quickly and says so
#   nvidia-smi    the GPUs, driver and CUDA version
#   pytest_gpu    pytest -m gpu with --junitxml: counts, failures and skips with their reasons. A gpu test that
#                 skips on a GPU machine fails the smoke run, except a two-GPU test on a one-GPU machine
#   weight_sync   benchmarks/weight_sync.py --quick --sections toy --device cuda (learner and worker share the
#                 GPU, gloo); weight_sync_nccl: --backend nccl, only with 2+ GPUs
#   rollout       benchmarks/rollout.py --quick --device cuda (HF section on the GPU; its vLLM section has no GPU
#                 variant and says so in the JSON)
#   learner_vs_trl benchmarks/learner_vs_trl.py --quick --device cuda (both trainers on the GPU, fp32)
#
# Output: $OUT/gpu_smoke.json (schema rayscale.gpu_smoke/1; keys: status, exit_code, reason, versions, cuda,
# python, dependencies, nvidia_smi, steps, pytest_gpu, weight_sync, weight_sync_nccl, rollout, learner_vs_trl),
# beside it logs/ (one log per step), pytest_gpu.xml and each benchmark's own JSON. A summary table at the end.
#
# Exit status: 0 every step passed; 1 a step failed, timed out or skipped; 2 this script's own error (bad
# BUDGET_S, no python3 to write the report, OUT not writable); 3 no CUDA device (nothing GPU ran; the JSON says
# why); 4 CUDA but required modules missing and not installable (offline, no wheels).
#
# Environment: OUT (gpu_smoke), BUDGET_S (540: the whole run; each step gets min(its cap, what is left)),
# GPU_SMOKE_STEPS (comma list of pytest_gpu,weight_sync,weight_sync_nccl,rollout,learner_vs_trl; default all),
# GPU_SMOKE_PYTHON (use this interpreter only), GPU_SMOKE_INSTALL (1; 0: never install), GPU_SMOKE_WHEELS,
# caps in seconds PYTEST_CAP_S (300), WEIGHT_SYNC_CAP_S (120), ROLLOUT_CAP_S (90), LEARNER_CAP_S (120),
# PYTEST_PER_TEST_S (240, with pytest-timeout), PYTEST_ARGS (extra pytest arguments).
set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
START=$(date +%s)
OUT=${OUT:-gpu_smoke}
BUDGET_S=${BUDGET_S:-540}
STEPS=${GPU_SMOKE_STEPS:-pytest_gpu,weight_sync,weight_sync_nccl,rollout,learner_vs_trl}
INSTALL=${GPU_SMOKE_INSTALL:-1}
RESERVE_S=15   # kept back for the report
MIN_STEP_S=20  # a step is not started with less than this
HELPER="$ROOT/benchmarks/gpu_smoke_report.py"

if ! [[ $BUDGET_S =~ ^[0-9]+$ ]]; then
    echo "gpu_smoke: BUDGET_S must be a number of seconds, got '$BUDGET_S'" >&2
    exit 2
fi
if ! mkdir -p "$OUT/steps" "$OUT/logs" 2>/dev/null; then
    echo "gpu_smoke: cannot create OUT=$OUT" >&2
    exit 2
fi
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/steps/*.json "$OUT"/gpu_smoke.json "$OUT"/environment.json "$OUT"/nvidia_smi.json \
    "$OUT"/pytest_gpu.xml "$OUT"/weight_sync*.json "$OUT"/rollout.json "$OUT"/learner_vs_trl.json

# The report's own interpreter: any python3 (standard library only).
HOST_PY=""
for c in ${GPU_SMOKE_HOST_PYTHON:-} python3 python /usr/bin/python3; do
    # its real path (not a launcher such as a pyenv shim: each call of it would cost a start-up)
    HOST_PY=$("$c" -c 'import sys; assert sys.version_info >= (3, 8); print(sys.executable)' 2>/dev/null) || HOST_PY=""
    [[ -n $HOST_PY ]] && break
done
if [[ -z $HOST_PY ]]; then
    printf '{"schema": "rayscale.gpu_smoke/1", "status": "error", "exit_code": 2, "reason": "no python3 >= 3.8 on PATH"}\n' \
        >"$OUT/gpu_smoke.json"
    echo "gpu_smoke: no python3 on PATH; wrote $OUT/gpu_smoke.json" >&2
    exit 2
fi
helper() { "$HOST_PY" "$HELPER" "$@"; }

left() { echo $((BUDGET_S - ($(date +%s) - START) - RESERVE_S)); }
cap() { local c=$1 l; l=$(left); echo $((c < l ? c : l)); }
selected() { [[ ",$STEPS," == *",$1,"* ]]; }
record() { helper record "$OUT" "$1" "$1" "${@:2}"; }
# skip KEY REASON [expected]: recorded; an unexpected skip fails the run
skip() {
    echo "--- $1: skipped: $2"
    record "$1" status=skipped "reason=$2" "expected=${3:-0}"
}

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's rayscale, for the tests and Ray's workers
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
export RAYSCALE_MODEL_CACHE=${RAYSCALE_MODEL_CACHE:-$ROOT/.cache/models}
RAY_BEFORE=$(pgrep -x raylet 2>/dev/null | wc -l)  # Ray already running here: never `ray stop` it

# ------------------------------------------------------------------------------------------------ environment
echo "=== gpu_smoke: OUT=$OUT BUDGET_S=$BUDGET_S steps=$STEPS"
probe_all() {
    local cands=() seen="" c p i=0 pairs=()
    if [[ -n ${GPU_SMOKE_PYTHON:-} ]]; then
        cands=("$GPU_SMOKE_PYTHON")
    else
        [[ -n ${VIRTUAL_ENV:-} ]] && cands+=("$VIRTUAL_ENV/bin/python")
        cands+=("$ROOT/.venv/bin/python" "$ROOT/.venv-gpu-smoke/bin/python" python3 python
            /opt/torch/.venv/bin/python3 /opt/conda/bin/python)
    fi
    for c in "${cands[@]}"; do
        p=$(command -v "$c" 2>/dev/null) || continue
        [[ -x $p ]] || continue
        case " $seen " in *" $p "*) continue ;; esac
        seen="$seen $p"
        i=$((i + 1))
        timeout -k 5 90 "$p" "$HELPER" probe >"$OUT/logs/probe_$i.json" 2>"$OUT/logs/probe_$i.json.err" </dev/null
        pairs+=("$p=$OUT/logs/probe_$i.json")
        echo "probe $p: $("$HOST_PY" -c 'import json, sys
try:
    p = json.load(open(sys.argv[1]))
    t = p["torch"]
    print("torch", t.get("version") or "missing", "| CUDA device:", p["cuda_available"],
          "| missing:", ",".join(p["missing_required"]) or "none")
except Exception:
    print("no answer:", open(sys.argv[1] + ".err").read().strip()[-200:])' "$OUT/logs/probe_$i.json" 2>&1)"
    done
    [[ ${#pairs[@]} -eq 0 ]] && pairs=("${cands[0]}=")
    helper choose "$OUT" "$ROOT" "$BUDGET_S" "$START" "${pairs[@]}" >"$OUT/logs/choose.txt"
}
probe_all
IFS='|' read -r PY CUDA NGPU IN_VENV MISSING MISSING_OPT NO_CUDA < <(tail -n 1 "$OUT/logs/choose.txt")
echo "chosen: ${PY:-none} cuda=$CUDA gpus=$NGPU missing required: ${MISSING:-none}; optional: ${MISSING_OPT:-none}"

if [[ $CUDA == 1 && -n $MISSING && $INSTALL != 0 ]]; then
    WHEELS=${GPU_SMOKE_WHEELS:-$ROOT/.whl}
    log="$OUT/logs/install.log"
    t=$(cap 180)
    t0=$(date +%s)
    if ((t < MIN_STEP_S)); then
        method="none: budget exhausted before the install"
        rc=124
        : >"$log"
    elif compgen -G "$WHEELS/*.whl" >/dev/null; then
        method="pip install --no-index --no-deps --target $ROOT/.gpu_smoke_site $WHEELS/*.whl"
        timeout -k 10 "$t" "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade \
            --target "$ROOT/.gpu_smoke_site" "$WHEELS"/*.whl >"$log" 2>&1 </dev/null
        rc=$?
        export PYTHONPATH="$ROOT/.gpu_smoke_site:$PYTHONPATH"
    else
        rc=0
        : >"$log"
        if [[ $IN_VENV != 1 ]]; then  # never into a system interpreter: a venv that still sees its torch
            timeout -k 5 60 "$PY" -m venv --system-site-packages "$ROOT/.venv-gpu-smoke" >>"$log" 2>&1 </dev/null
            rc=$?
            [[ $rc == 0 ]] && PY="$ROOT/.venv-gpu-smoke/bin/python"
        fi
        method="$PY -m pip install -e .[dev] (no build isolation, no retries)"
        if [[ $rc == 0 ]]; then
            timeout -k 10 "$t" "$PY" -m pip install --retries 0 --timeout 10 --no-build-isolation -e "$ROOT[dev]" \
                >>"$log" 2>&1 </dev/null
            rc=$?
        else
            method="python -m venv --system-site-packages .venv-gpu-smoke (failed: no pip install tried)"
        fi
    fi
    echo "install ($method): exit $rc"
    i=reprobe
    timeout -k 5 90 "$PY" "$HELPER" probe >"$OUT/logs/probe_$i.json" 2>"$OUT/logs/probe_$i.json.err" </dev/null
    IFS='|' read -r PY CUDA NGPU IN_VENV MISSING MISSING_OPT NO_CUDA < <(helper choose "$OUT" "$ROOT" "$BUDGET_S" "$START" \
        "$PY=$OUT/logs/probe_$i.json" | tail -n 1)
    helper install-note "$OUT" "$method" "$rc" "$(($(date +%s) - t0))" "$log"
    echo "after install: missing required: ${MISSING:-none}; optional: ${MISSING_OPT:-none}"
fi
timeout -k 5 40 "$HOST_PY" "$HELPER" nvidia-smi "$OUT" </dev/null || echo "nvidia-smi probe failed (exit $?)"

# ------------------------------------------------------------------------------------------------ steps
ray_cleanup() {  # after a step was killed: its Ray processes would hold the GPU for the next step
    if [[ $RAY_BEFORE -eq 0 ]]; then
        timeout -k 5 30 "$PY" -m ray.scripts.scripts stop --force >>"$OUT/logs/ray_stop.log" 2>&1 </dev/null
    else
        echo "note: a step was killed and Ray was running before this script: not stopping Ray" >&2
    fi
}

# run_step KEY CAP_S [json=FILE|junit=FILE] -- COMMAND...
run_step() {
    local key=$1 c=$2 extra=$3 t t0 t1 rc log="$OUT/logs/$1.log"
    shift 4
    t=$(cap "$c")
    if ((t < MIN_STEP_S)); then
        skip "$key" "budget exhausted: $(left) s left of BUDGET_S=$BUDGET_S"
        return
    fi
    echo "--- $key (timeout ${t} s): $*"
    t0=$(date +%s%N)
    timeout -k 15 "$t" "$@" </dev/null 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    t1=$(date +%s%N)
    record "$key" status=ran "rc=$rc" "seconds=$(((t1 - t0) / 1000000000)).$(((t1 - t0) / 100000000 % 10))" \
        "timeout_s=$t" "command=$*" "log=$log" "$extra"
    if ((rc == 124 || rc == 137)); then ray_cleanup; fi
}

GPU_STEPS=(pytest_gpu weight_sync weight_sync_nccl rollout learner_vs_trl)
if [[ $CUDA != 1 ]]; then
    for k in "${GPU_STEPS[@]}"; do skip "$k" "${NO_CUDA:-no CUDA device}"; done
elif [[ -n $MISSING ]]; then
    for k in "${GPU_STEPS[@]}"; do skip "$k" "missing required modules: $MISSING"; done
else
    for k in "${GPU_STEPS[@]}"; do
        if ! selected "$k"; then
            skip "$k" "not selected (GPU_SMOKE_STEPS=$STEPS)" 1
            continue
        fi
        case $k in
        pytest_gpu)
            per_test=()
            [[ ",$MISSING_OPT," != *",pytest_timeout,"* ]] && per_test=(--timeout "${PYTEST_PER_TEST_S:-240}")
            # shellcheck disable=SC2086
            run_step pytest_gpu "${PYTEST_CAP_S:-300}" "junit=$OUT/pytest_gpu.xml" -- \
                "$PY" -m pytest -m gpu -p no:cacheprovider -o junit_family=xunit2 --junitxml="$OUT/pytest_gpu.xml" \
                -rA "${per_test[@]}" ${PYTEST_ARGS:-} tests
            ;;
        weight_sync)
            run_step weight_sync "${WEIGHT_SYNC_CAP_S:-120}" "json=$OUT/weight_sync.json" -- \
                "$PY" benchmarks/weight_sync.py --quick --sections toy --device cuda --json "$OUT/weight_sync.json"
            ;;
        weight_sync_nccl)
            if ((NGPU < 2)); then
                skip weight_sync_nccl "needs 2 GPUs (NCCL refuses two ranks on one GPU); $NGPU here" 1
            else
                run_step weight_sync_nccl "${WEIGHT_SYNC_CAP_S:-120}" "json=$OUT/weight_sync_nccl.json" -- \
                    "$PY" benchmarks/weight_sync.py --quick --sections toy --backend nccl \
                    --json "$OUT/weight_sync_nccl.json"
            fi
            ;;
        rollout)
            run_step rollout "${ROLLOUT_CAP_S:-90}" "json=$OUT/rollout.json" -- \
                "$PY" benchmarks/rollout.py --quick --device cuda --json "$OUT/rollout.json"
            ;;
        learner_vs_trl)
            if [[ ",$MISSING_OPT," == *",trl,"* ]]; then
                skip learner_vs_trl "trl is not importable by $PY (bring it as a wheel: GPU_SMOKE_WHEELS)"
            else
                run_step learner_vs_trl "${LEARNER_CAP_S:-120}" "json=$OUT/learner_vs_trl.json" -- \
                    "$PY" benchmarks/learner_vs_trl.py --quick --device cuda --json "$OUT/learner_vs_trl.json"
            fi
            ;;
        esac
    done
fi

helper finalize "$OUT"
rc=$?
[[ -f $OUT/gpu_smoke.json ]] || rc=2
exit $rc
