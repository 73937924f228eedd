-- bench/writes/put.lua - wrk script: one PUT per request, every id distinct.
--
--   wrk -t1 -c64 -d10s --latency -s put.lua URL -- PREFIX PATH_BASE [TOKEN]
--
-- PREFIX    makes ids distinct across runs against the same server ("m1")
-- PATH_BASE the URL path the id is appended to, e.g.
--           /api/v1/spaces/bench/collections/issues/entities/   (snapsync)
--           /bench/                                             (pouchdb-server)
-- TOKEN     optional bearer token (snapsync)
--
-- Each request is PUT PATH_BASE .. PREFIX .. "-" .. n with a ~330-byte JSON
-- object made from n (the same generator as sqlite_bound.c's body()). With
-- -t1 there is one Lua state, so n counts every request of the run; with
-- more threads each thread adds its own number to the prefix.

local counter = 0
local prefix, base
local headers = { ["Content-Type"] = "application/json" }
local statuses = { "open", "in_progress", "review", "closed" }
local points = { 1, 2, 3, 5, 8, 13 }
threads_made = 0 -- main state only (setup)

function setup(thread)
  threads_made = threads_made + 1
  thread:set("thread_no", threads_made)
end

function init(args)
  prefix = args[1] or "r"
  base = args[2] or "/"
  if args[3] and args[3] ~= "" then
    headers["Authorization"] = "Bearer " .. args[3]
  end
  if thread_no and thread_no > 1 then
    prefix = prefix .. "t" .. thread_no
  end
end

local function body(n)
  return string.format(
    '{"title":"Checkout fails after applying coupon #%d","status":"%s","priority":%d,' ..
    '"assignee":"user-%d","reporter":"user-%d","labels":["bug","checkout","p%d"],' ..
    '"points":%d,"sprint":"2026-W%02d","component":"web/cart","description":' ..
    '"Add %d items, apply coupon SAVE%d, press Checkout: the button spins and nothing happens."}',
    n, statuses[n % 4 + 1], n % 5, n % 97, n % 211, n % 5, points[n % 6 + 1],
    n % 52 + 1, n % 9 + 1, n % 50)
end

function request()
  counter = counter + 1
  return wrk.format("PUT", base .. prefix .. "-" .. counter, headers, body(counter))
end
