#!/usr/bin/env bash
# Run the test suite against a Redis of its own: a private redis-server on a free loopback
# port, in a temporary directory, started here and stopped afterwards. Two runs on one
# machine never share state (set AGENTFLOW_TEST_REDIS_URL to use a given Redis instead).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
started=""
runtime="$(mktemp -d "${TMPDIR:-/tmp}/agentflow-test-redis.XXXXXX")"
if [ -z "${AGENTFLOW_TEST_REDIS_URL:-}" ]; then
  url="$(AGENTFLOW_BROKER__EMBEDDED_DIR="$runtime" "$VENV/bin/agentflow" redis start)"
  started=1
  export AGENTFLOW_TEST_REDIS_URL="${url%/*}/0"
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
