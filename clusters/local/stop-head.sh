#!/usr/bin/env bash
# Stop the local head. Note: `ray stop` stops every Ray process of this user on the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
PATH="$PWD/.venv/bin:$PATH" ray stop
