#!/usr/bin/env bash
# Installs PoA Stream into .venv, starts the local Kafka broker (KRaft, jars from Maven
# Central) for the integration tests, runs the whole test suite, and stops the broker.
# Extra arguments go to pytest. Exit code: pytest's; "no tests collected" is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# headless Chromium renders `poa report` in tests/test_report.py (Debian's package)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

export POA_HOME="${POA_HOME:-$PWD/.poa/test}"
export POA_KAFKA_LOCAL_PORT="${POA_KAFKA_LOCAL_PORT:-19192}"
export POA_KAFKA_LOCAL_CONTROLLER_PORT="${POA_KAFKA_LOCAL_CONTROLLER_PORT:-19193}"
stop_broker() { .venv/bin/poa kafka stop || true; }
trap stop_broker EXIT
.venv/bin/poa kafka start
export POA_TEST_KAFKA_BOOTSTRAP="127.0.0.1:${POA_KAFKA_LOCAL_PORT}"

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
