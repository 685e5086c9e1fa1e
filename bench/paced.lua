-- Paced wrk load: every connection waits DELAY ms after each response before its next request,
-- so C connections offer about C * 1000 / (DELAY + latency) requests per second: a fixed load
-- well below saturation (wrk has no open-loop mode; wrk2 is not packaged in Debian).
-- Same keys as the harness's load.lua: GET /home?id=<6 digits> with X-Request-ID.
-- Arguments: DELAY_MS [keys-per-thread]
local reqs, n, i, pause = {}, 50000, 0, 2
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

function init(args)
  pause = tonumber(args[1] or "2")
  n = tonumber(args[2] or "") or 50000
  math.randomseed(12345 + 7919 * tid)
  for k = 1, n do
    local id = tostring(math.random(100000, 999999))
    reqs[k] = wrk.format("GET", "/home?id=" .. id, { ["X-Request-ID"] = id })
  end
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

function delay()
  return pause
end
