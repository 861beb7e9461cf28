#!/usr/bin/env bash
# A local Ray head with every port bound to 127.0.0.1, for trying `ray job submit` on one machine.
#   clusters/local/start-head.sh            # then the printed `ray job submit` command
#   clusters/local/stop-head.sh             # stops this head only (the processes it recorded)
set -euo pipefail
cd "$(dirname "$0")/../.."
PORT=${PORT:-6379}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
CLIENT_PORT=${CLIENT_PORT:-10001}
AGENT_PORT=${AGENT_PORT:-52365}   # the dashboard agent's HTTP port (job submission goes through it)
TEMP_DIR=${TEMP_DIR:-/tmp/xbar-sweep-ray}
# Loopback only: Ray resolves --node-ip-address=127.0.0.1 to the machine's reachable address (and
# binds GCS, raylet and agents there) unless it is told this is not a multi-node cluster.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# Token authentication is off on this loopback-only head; use RAY_AUTH_MODE=token on real clusters.
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
export PATH="$PWD/.venv/bin:$PATH"   # jobs run the `python` found first on PATH when the head starts
mkdir -p "$TEMP_DIR"
ray start --head --node-ip-address=127.0.0.1 --port="$PORT" --ray-client-server-port="$CLIENT_PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --dashboard-agent-listen-port="$AGENT_PORT" \
    --temp-dir="$TEMP_DIR" --disable-usage-stats
# Record this head's processes (its session's and those serving its port) for stop-head.sh.
SESSION=$(readlink -f "$TEMP_DIR/session_latest")
{ pgrep -f -- "$SESSION" || true; pgrep -f -- "127.0.0.1:$PORT" || true; } | sort -u > "$TEMP_DIR/head.pids"
echo "$SESSION" > "$TEMP_DIR/head.session"
cat <<MSG

Submit a sweep (the working directory is uploaded; results land in output.dir):
  RAY_AUTH_MODE=$RAY_AUTH_MODE .venv/bin/ray job submit --address http://127.0.0.1:$DASHBOARD_PORT \\
      --runtime-env clusters/runtime_env.yaml \\
      -- python -m sweep.cli run examples/quickstart.yaml --set output.dir=$PWD/results/quickstart
Stop it (this head only):
  clusters/local/stop-head.sh
MSG
