-- wrk script: single enqueues, one job per request, against Pier's POST /v1/jobs.
--
--   PIER_BENCH_KEY=pier_… wrk -t2 -c32 -d20s --latency -s bench/http/enqueue.lua http://127.0.0.1:8080
--
-- Environment:
--   PIER_BENCH_KEY    an API key with jobs:write (required)
--   PIER_BENCH_QUEUE  the queue to fill (default "bench")
--
-- Every response that is not 201 Created is counted (per status), so errors are never mistaken
-- for throughput. At the end the script prints the counts and one line
--   wrk-json: {...}
-- with requests, duration, requests/s, 201s/s, wrk's own error counts and latency percentiles,
-- which bench/run-http.sh turns into its JSON record.

local key = os.getenv("PIER_BENCH_KEY")
if key == nil or key == "" then
  error("set PIER_BENCH_KEY to an API key with jobs:write")
end
local queue = os.getenv("PIER_BENCH_QUEUE") or "bench"
if not queue:match("^[A-Za-z0-9][A-Za-z0-9_.:-]*$") then
  error("PIER_BENCH_QUEUE is not a valid queue name: " .. queue)
end

wrk.method = "POST"
wrk.path = "/v1/jobs"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.headers["Content-Type"] = "application/json"

-- Main state: remember every thread so done() can collect their counts.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- Thread state (each thread runs its own copy of this script).
local sent = 0
created = 0
not_created = 0
statuses = ""   -- "status=count;…", only for responses other than 201

local other = {}

function init(args)
  -- id is set by setup() before init() runs.
  prefix = '{"kind":"noop","queue":"' .. queue .. '","payload":{"thread":' .. id .. ',"n":'
end

function request()
  sent = sent + 1
  return wrk.format(nil, nil, nil, prefix .. sent .. "}}")
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  else
    not_created = not_created + 1
    other[status] = (other[status] or 0) + 1
    local parts = {}
    for code, n in pairs(other) do
      table.insert(parts, code .. "=" .. n)
    end
    statuses = table.concat(parts, ";")
  end
end

-- Main state again, after the run.
function done(summary, latency, requests)
  local total_created, total_not_created = 0, 0
  local by_status = {}
  for _, thread in ipairs(threads) do
    total_created = total_created + (thread:get("created") or 0)
    total_not_created = total_not_created + (thread:get("not_created") or 0)
    local text = thread:get("statuses") or ""
    for code, n in text:gmatch("(%d+)=(%d+)") do
      by_status[code] = (by_status[code] or 0) + tonumber(n)
    end
  end
  local seconds = summary.duration / 1e6
  local status_json = {}
  for code, n in pairs(by_status) do
    table.insert(status_json, string.format('"%s":%d', code, n))
  end
  table.sort(status_json)
  local errors = summary.errors
  local socket_errors = errors.connect + errors.read + errors.write + errors.timeout

  io.write(string.format("enqueue.lua: %d responses, %d were 201, %d were not%s\n",
    total_created + total_not_created, total_created, total_not_created,
    total_not_created > 0 and (" (" .. table.concat(status_json, ", ") .. ")") or ""))
  if socket_errors > 0 then
    io.write(string.format(
      "enqueue.lua: socket errors: connect %d, read %d, write %d, timeout %d\n",
      errors.connect, errors.read, errors.write, errors.timeout))
  end
  io.write(string.format(
    'wrk-json: {"requests":%d,"seconds":%.3f,"requests_per_sec":%.1f,"created":%d,' ..
    '"created_per_sec":%.1f,"not_created":%d,"not_created_by_status":{%s},' ..
    '"non_2xx_3xx":%d,"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f,"mean":%.3f}}\n',
    summary.requests, seconds, summary.requests / seconds, total_created,
    total_created / seconds, total_not_created, table.concat(status_json, ","),
    errors.status, errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, latency.mean / 1e3))
end
