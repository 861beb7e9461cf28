#!/usr/bin/env bash
# Stop the head started by start-head.sh: the processes it recorded and their descendants
# (workers, agents), SIGTERM first and SIGKILL after a grace period. Other Ray clusters of this
# user are left alone (unlike `ray stop`).
set -euo pipefail
TEMP_DIR=${TEMP_DIR:-/tmp/xbar-sweep-ray}
GRACE=${GRACE:-10}
PIDS_FILE="$TEMP_DIR/head.pids"
if [[ ! -f "$PIDS_FILE" ]]; then
    echo "no head recorded in $TEMP_DIR (start it with clusters/local/start-head.sh)" >&2
    exit 1
fi
SESSION=$(cat "$TEMP_DIR/head.session" 2>/dev/null || true)
roots=$(cat "$PIDS_FILE")
if [[ -n "$SESSION" ]]; then roots="$roots $(pgrep -f -- "$SESSION" || true)"; fi
all=""
collect() {
    local p
    for p in "$@"; do
        [[ " $all " == *" $p "* ]] && continue
        kill -0 "$p" 2>/dev/null || continue
        all="$all $p"
        # shellcheck disable=SC2046
        collect $(pgrep -P "$p" || true)
    done
}
# shellcheck disable=SC2086
collect $roots
if [[ -n "${all// /}" ]]; then
    # shellcheck disable=SC2086
    kill -TERM $all 2>/dev/null || true
    for _ in $(seq "$GRACE"); do
        alive=""
        for p in $all; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        [[ -z "$alive" ]] && break
        sleep 1
    done
    # shellcheck disable=SC2086
    [[ -n "${alive:-}" ]] && kill -KILL $alive 2>/dev/null || true
fi
rm -f "$PIDS_FILE" "$TEMP_DIR/head.session"
echo "stopped the head of $TEMP_DIR (${all:- no live processes})"
