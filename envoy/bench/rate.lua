-- wrk script for make bench's fixed-load pass: the requests of tokens.lua, sent at a fixed offered rate
-- instead of as fast as the chain answers, so that p99 shows a filter's pauses rather than the queue of a
-- saturated proxy.
--   wrk -t1 -c16 -d6s -s envoy/bench/rate.lua http://127.0.0.1:PORT/score -- RATE TOKENS_FILE [BODY_FILE]
-- RATE is requests per second for the whole wrk thread (use -t1). Sends are slotted on one schedule at
-- 1/RATE apart: a connection that is free claims the next slot and waits for it (wrk's delay(), in whole
-- milliseconds, so a send may be up to half a millisecond early or late; the schedule, not the rounding,
-- sets the rate). A slot already past is sent at once and the schedule moves on from it, so a stalled chain
-- gets fewer requests than offered (the achieved rate shows it) rather than a burst afterwards. Latency is
-- wrk's, from a request's send to its response: as with h2load --rps, time a request waited for a free
-- connection is not counted.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "tokens.lua")

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } mlgate_bench_timespec;
  int clock_gettime(int clock_id, mlgate_bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("mlgate_bench_timespec")
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
  return tonumber(now_ts.tv_sec) * 1e6 + tonumber(now_ts.tv_nsec) / 1e3
end

local tokens_init = init
local interval_us, next_us = nil, nil

function init(args)
  local rate = tonumber(args[1])
  if not rate or rate <= 0 then
    error("usage: wrk -t1 ... -s rate.lua URL -- RATE TOKENS_FILE [BODY_FILE]")
  end
  interval_us = 1e6 / rate
  tokens_init({ args[2], args[3] })
end

-- wrk calls delay() before each request of a connection (its first one too) when the script defines it.
function delay()
  local now = now_us()
  if not next_us or next_us < now then
    next_us = now
  end
  local wait = next_us - now
  next_us = next_us + interval_us
  return math.floor(wait / 1000 + 0.5)
end
