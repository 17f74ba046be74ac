-- wrk script: MCP `tools/call` of $MCP_TOOL on the initialized session $MCP_SESSION.
-- Each request carries its own JSON-RPC id: a session answers one request per id.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Session-Id"] = os.getenv("MCP_SESSION")
wrk.headers["Mcp-Protocol-Version"] = "2025-06-18"
local tool = os.getenv("MCP_TOOL")
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil,
    '{"jsonrpc":"2.0","id":' .. n .. ',"method":"tools/call","params":{"name":"' .. tool .. '","arguments":{}}}')
end
