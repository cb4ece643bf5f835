#!/usr/bin/env bash
# One machine: start a Ray head bound to loopback, submit `rayscale train` as a Ray job, stop Ray afterwards.
#
#   launch/local.sh [CONFIG.yaml] [key.sub=value ...]
#   launch/local.sh launch/configs/1node-8gpu.yaml algo.iterations=10
#
# Environment (all optional):
#   RAY_PORT=6379            GCS port of the head
#   RAY_DASHBOARD_PORT=8265  dashboard + job server port
#   RAY_DASHBOARD_HOST=127.0.0.1   where the dashboard/job server listens. Anyone who reaches it can run code on
#                            this machine: keep loopback and use an SSH tunnel (docs/launch.md); 0.0.0.0 is an
#                            explicit opt-in.
#   RAY_NUM_CPUS             CPUs the head offers. Default: sized for the run as `rayscale train` sizes a local Ray
#                            (`rayscale plan CONFIG --local-num-cpus`: cluster.num_cpus, else the larger of the cores
#                            and the plan's CPUs). Logical CPUs are scheduling tokens, so the default run's 4.5 CPUs
#                            of actors share a 2-core machine
#   RAY_NUM_GPUS             GPUs the head offers (default: what Ray detects)
#   RAY_AUTH_MODE=token      Ray token authentication for the dashboard, job API and GCS (the token lives in
#                            ~/.ray/auth_token, created once); `disabled` opts out
#   RAYSCALE_REUSE_RAY=1     submit to a head already running on RAY_PORT instead of starting (and stopping) one
#   RAYSCALE_RUN_DIR         where the run writes (default: runs/<config name> in this checkout). The job runs in
#                            a COPY of the working directory, so a relative run_dir would land in that copy.
set -euo pipefail

cd "$(dirname "$0")/.."  # the repository root: it is the job's working directory
RAY_PORT=${RAY_PORT:-6379}
RAY_DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
RAY_DASHBOARD_HOST=${RAY_DASHBOARD_HOST:-127.0.0.1}
# Explicit and the same for every command below: with a token file present, Ray >= 2.59 turns authentication on for
# `ray start --head` by itself, and a client that was not told would then be refused.
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
if [[ "$RAY_AUTH_MODE" == token && -z "${RAY_AUTH_TOKEN:-}" ]]; then
  ray get-auth-token --generate >/dev/null  # creates ~/.ray/auth_token if there is none; prints nothing here
fi

if [[ "${RAYSCALE_REUSE_RAY:-0}" != 1 ]]; then
  if [[ -z "${RAY_NUM_CPUS:-}" ]]; then
    RAY_NUM_CPUS=$(rayscale plan "$@" --local-num-cpus)  # a config error stops here (exit 2), before Ray starts
  fi
  ray start --head \
    --node-ip-address=127.0.0.1 --port="$RAY_PORT" \
    --dashboard-host="$RAY_DASHBOARD_HOST" --dashboard-port="$RAY_DASHBOARD_PORT" \
    --num-cpus="$RAY_NUM_CPUS" ${RAY_NUM_GPUS:+--num-gpus="$RAY_NUM_GPUS"}
  trap 'ray stop' EXIT  # note: stops every Ray instance of this user here; RAYSCALE_REUSE_RAY=1 leaves Ray alone
fi

# Fail in seconds, naming the role and the shortfall, if the config asks for more than this machine has.
rayscale status "$@" --address "127.0.0.1:$RAY_PORT" --wait-nodes 1 --timeout 60 || {
  rc=$?
  if [[ "${RAYSCALE_REUSE_RAY:-0}" == 1 ]]; then
    echo "local.sh: the fit check above failed on the Ray head already running on port $RAY_PORT (RAYSCALE_REUSE_RAY=1):" \
         "restart it with more resources (ray start --head --num-cpus=N --num-gpus=N), or unset RAYSCALE_REUSE_RAY" \
         "so this script starts a head sized for the run" >&2
  else
    offered="RAY_NUM_CPUS=$RAY_NUM_CPUS${RAY_NUM_GPUS:+, RAY_NUM_GPUS=$RAY_NUM_GPUS}"
    echo "local.sh: the fit check above failed on this head ($offered). If the run does not fit, set" \
         "RAY_NUM_CPUS to at least the CPUs it asks for" \
         "(Ray's CPUs are scheduling tokens: more than the cores is fine), e.g. RAY_NUM_CPUS=16 $0 ..., set" \
         "RAY_NUM_GPUS for missing GPUs, or ask the config for fewer actors" >&2
  fi
  exit "$rc"
}

config_name=default
[[ "${1:-}" == *.yaml || "${1:-}" == *.yml ]] && config_name=$(basename "${1%.*}")
RAYSCALE_RUN_DIR=${RAYSCALE_RUN_DIR:-$PWD/runs/$config_name}

# `cluster.address=auto` joins this cluster from inside the job (Ray sets RAY_ADDRESS for the entrypoint).
ray job submit --address "http://127.0.0.1:$RAY_DASHBOARD_PORT" --working-dir . \
  -- rayscale train "$@" cluster.address=auto tracking.run_dir="$RAYSCALE_RUN_DIR"
