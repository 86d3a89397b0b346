#!/usr/bin/env bash
# Run the test suite against a reachable Redis: 127.0.0.1:6379 (database 11) if it answers,
# else an embedded redis-server started here for the run and stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
started=""
runtime="$(mktemp -d "${TMPDIR:-/tmp}/agentflow-test-redis.XXXXXX")"
if [ -z "${AGENTFLOW_TEST_REDIS_URL:-}" ]; then
  if "$VENV/bin/python" -c 'import sys; from agentflow.broker.embedded import ping; sys.exit(0 if ping("redis://127.0.0.1:6379/11") else 1)'; then
    export AGENTFLOW_TEST_REDIS_URL="redis://127.0.0.1:6379/11"
  else
    url="$(AGENTFLOW_BROKER__EMBEDDED_DIR="$runtime" "$VENV/bin/agentflow" redis start)"
    started=1
    export AGENTFLOW_TEST_REDIS_URL="${url%/*}/11"
  fi
fi
cleanup() {
  if [ -n "$started" ]; then
    AGENTFLOW_BROKER__EMBEDDED_DIR="$runtime" "$VENV/bin/agentflow" redis stop >/dev/null || true
  fi
  rm -rf "$runtime"
}
trap cleanup EXIT
echo "tests use Redis at $AGENTFLOW_TEST_REDIS_URL"
start=$(date +%s)
"$VENV/bin/python" -m pytest -q "$@"
echo "test suite took $(( $(date +%s) - start ))s"
