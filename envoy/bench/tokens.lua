-- wrk script for make bench: every request carries the next token of a file (one per line), in order,
-- wrapping around. The requests are built once in init(), so wrk spends nothing per request on Lua
-- string work beyond returning a prebuilt request.
--   wrk -t1 -c16 -d6s -s envoy/bench/tokens.lua http://127.0.0.1:PORT/score -- TOKENS_FILE [BODY_FILE]
-- With BODY_FILE every request is a POST of that file's bytes as application/json (a body-model route).
-- done() prints one machine-readable line: BENCH requests=… duration_us=… non2xx=… errors=… p50_us=… p99_us=…
-- envoy/bench/rate.lua runs the same requests at a fixed offered rate.
local requests = {}
local n, i = 0, 0

function init(args)
  local file, body_file = args[1], args[2]
  if not file then
    error("usage: wrk ... -s tokens.lua URL -- TOKENS_FILE [BODY_FILE]")
  end
  local method, body = "GET", nil
  if body_file and #body_file > 0 then
    local f = assert(io.open(body_file, "rb"))
    body = f:read("*a")
    f:close()
    method = "POST"
  end
  for line in io.lines(file) do
    if #line > 0 then
      n = n + 1
      local headers = { ["Host"] = wrk.host, ["Authorization"] = "Bearer " .. line }
      if body then
        headers["Content-Type"] = "application/json"
      end
      requests[n] = wrk.format(method, wrk.path, headers, body)
    end
  end
  if n == 0 then
    error("no tokens in " .. file)
  end
end

function request()
  i = i % n + 1
  return requests[i]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d non2xx=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
