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
#   RAY_NUM_CPUS / RAY_NUM_GPUS    resources the head offers (default: what Ray detects). Logical CPUs are
#                            scheduling tokens: RAY_NUM_CPUS=8 lets the default run's 4.5 CPUs of actors share 2 cores
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
  ray start --head \
    --node-ip-address=127.0.0.1 --port="$RAY_PORT" \
    --dashboard-host="$RAY_DASHBOARD_HOST" --dashboard-port="$RAY_DASHBOARD_PORT" \
    ${RAY_NUM_CPUS:+--num-cpus="$RAY_NUM_CPUS"} ${RAY_NUM_GPUS:+--num-gpus="$RAY_NUM_GPUS"}
  trap 'ray stop' EXIT  # note: stops every Ray instance of this user here; RAYSCALE_REUSE_RAY=1 leaves Ray alone
fi

# Fail in seconds, naming the role and the shortfall, if the config asks for more than this machine has.
rayscale status "$@" --address "127.0.0.1:$RAY_PORT" --wait-nodes 1 --timeout 60

config_name=default
[[ "${1:-}" == *.yaml || "${1:-}" == *.yml ]] && config_name=$(basename "${1%.*}")
RAYSCALE_RUN_DIR=${RAYSCALE_RUN_DIR:-$PWD/runs/$config_name}

# `cluster.address=auto` joins this cluster from inside the job (Ray sets RAY_ADDRESS for the entrypoint).
ray job submit --address "http://127.0.0.1:$RAY_DASHBOARD_PORT" --working-dir . \
  -- rayscale train "$@" cluster.address=auto tracking.run_dir="$RAYSCALE_RUN_DIR"
