-- wrk script: MCP `tools/call` of $MCP_TOOL on the initialized session $MCP_SESSION.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Session-Id"] = os.getenv("MCP_SESSION")
wrk.headers["Mcp-Protocol-Version"] = "2025-06-18"
wrk.body = '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"' .. os.getenv("MCP_TOOL") .. '","arguments":{}}}'
