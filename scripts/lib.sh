# Shared by the local scripts: a moto server on a free loopback port, AWS CLI settings that
# reach it, and cleanup of every process the script started. Source it; do not run it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIDS=()
WORK=$(mktemp -d)

cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 600); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port)).close()" 2>/dev/null; then
      return
    fi
    sleep 0.5
  done
  echo "error: $what did not listen on 127.0.0.1:$port" >&2
  exit 1
}

# Starts moto (one request at a time, see tools/moto_serial.py) and points the SDKs and
# the AWS CLI at it with dummy credentials.
start_moto() {
  MOTO_PORT=$(free_port)
  "$ROOT/.venv/bin/python" "$ROOT/tools/moto_serial.py" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
  PIDS+=($!)
  wait_for_port "$MOTO_PORT" "moto"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
}

# The AWS CLI v1 ignores AWS_ENDPOINT_URL for some services: always pass it.
awsl() {
  aws --endpoint-url "$AWS_ENDPOINT_URL" --output json "$@"
}

# The counters table exactly as template.yaml defines it.
create_counters_table() {
  local table=$1
  awsl dynamodb create-table --table-name "$table" --billing-mode PAY_PER_REQUEST \
    --attribute-definitions AttributeName=pk,AttributeType=S AttributeName=sk,AttributeType=S \
      AttributeName=gsi1pk,AttributeType=S AttributeName=rejects,AttributeType=N \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    --global-secondary-indexes 'IndexName=by-window,KeySchema=[{AttributeName=gsi1pk,KeyType=HASH},{AttributeName=rejects,KeyType=RANGE}],Projection={ProjectionType=ALL}' \
    >/dev/null
  awsl dynamodb update-time-to-live --table-name "$table" \
    --time-to-live-specification Enabled=true,AttributeName=expires_at >/dev/null
}
