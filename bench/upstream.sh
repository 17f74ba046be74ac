# Sourced by bench/proxy.sh and bench/instructions.sh: the fixed upstream reply nginx
# serves, and an llmhub config pointing at it.

# The 305-byte chat.completion of the nginx upstream.
reply='{"id":"chatcmpl-bench","object":"chat.completion","created":1760000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}'

# hub_config DIR ADDR UP_PORT: DIR/hub.toml listening on ADDR (ledger off) with provider
# `mock` (model bench-model, the default) at 127.0.0.1:UP_PORT.
hub_config() {
  mkdir -p "$1/providers.d"
  cat > "$1/hub.toml" <<TOML
[server]
listen = "$2"
[routing]
default_model = "mock/bench-model"
[storage]
ledger = false
TOML
  cat > "$1/providers.d/mock.toml" <<TOML
base_url = "http://127.0.0.1:$3/v1"
models = ["bench-model"]
TOML
}
