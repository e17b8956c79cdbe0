-- wrk script for make bench: every request carries the next token of a file (one per line), in order,
-- wrapping around. The requests are built once in init(), so wrk spends nothing per request on Lua
-- string work beyond returning a prebuilt request.
--   wrk -t1 -c16 -d6s -s envoy/bench/tokens.lua http://127.0.0.1:PORT/score -- TOKENS_FILE
-- done() prints one machine-readable line: BENCH requests=… duration_us=… non2xx=… errors=… p50_us=… p99_us=…
local requests = {}
local n, i = 0, 0

function init(args)
  local file = args[1]
  if not file then
    error("usage: wrk ... -s tokens.lua URL -- TOKENS_FILE")
  end
  for line in io.lines(file) do
    if #line > 0 then
      n = n + 1
      requests[n] = wrk.format("GET", wrk.path, { ["Host"] = wrk.host, ["Authorization"] = "Bearer " .. line })
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
