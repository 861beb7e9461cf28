#!/usr/bin/env bash
# A local Ray head bound to 127.0.0.1, for trying `ray job submit` on one machine.
#   clusters/local/start-head.sh            # then the printed `ray job submit` command
#   clusters/local/stop-head.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PORT=${PORT:-6379}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
TEMP_DIR=${TEMP_DIR:-/tmp/xbar-sweep-ray}
# Bound to 127.0.0.1 only; token authentication is off here. Use RAY_AUTH_MODE=token on clusters.
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
export PATH="$PWD/.venv/bin:$PATH"   # jobs run the `python` found first on PATH when the head starts
ray start --head --node-ip-address=127.0.0.1 --port="$PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
    --temp-dir="$TEMP_DIR" --disable-usage-stats
cat <<MSG

Submit a sweep (the working directory is uploaded; results land in output.dir):
  RAY_AUTH_MODE=$RAY_AUTH_MODE ray job submit --address http://127.0.0.1:$DASHBOARD_PORT \\
      --working-dir . --runtime-env clusters/runtime_env.yaml \\
      -- python -m sweep.cli run examples/quickstart.yaml --set output.dir=$PWD/results/quickstart
MSG
