-- wrk script: one POST per request, each with a body of its own, counting every response that
-- does not have the expected status (per status), so errors are never mistaken for throughput.
--
--   PIER_BENCH_KEY=pier_… wrk -t2 -c32 -d20s --latency -s bench/http/post.lua http://127.0.0.1:8080
--
-- Environment:
--   PIER_BENCH_KEY     an API key allowed to make the request (required)
--   PIER_BENCH_PATH    the path to POST to (default /v1/jobs: single enqueues)
--   PIER_BENCH_BODY    the JSON body, in which {t} stands for the wrk thread, {n} for the request's
--                      number in its thread and {k} for that number modulo 1,000 (a caller key
--                      among 1,000). Default: a job on PIER_BENCH_QUEUE ("bench"):
--                      {"kind":"noop","queue":"bench","payload":{"thread":{t},"n":{n}}}
--   PIER_BENCH_STATUS  the status a successful response has (default 201)
--
-- At the end the script prints the counts and one line
--   wrk-json: {...}
-- with requests, duration, requests/s, expected responses (`ok`) and their rate, wrk's own
-- error counts and latency percentiles, which bench/run-http.sh turns into its JSON records.

local key = os.getenv("PIER_BENCH_KEY")
if key == nil or key == "" then
  error("set PIER_BENCH_KEY to an API key allowed to make the request")
end
local queue = os.getenv("PIER_BENCH_QUEUE") or "bench"
if not queue:match("^[A-Za-z0-9][A-Za-z0-9_.:-]*$") then
  error("PIER_BENCH_QUEUE is not a valid queue name: " .. queue)
end
local template = os.getenv("PIER_BENCH_BODY")
if template == nil or template == "" then
  template = '{"kind":"noop","queue":"' .. queue .. '","payload":{"thread":{t},"n":{n}}}'
end
local expected = tonumber(os.getenv("PIER_BENCH_STATUS") or "201")

wrk.method = "POST"
wrk.path = os.getenv("PIER_BENCH_PATH") or "/v1/jobs"
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
ok = 0
not_ok = 0
statuses = ""   -- "status=count;…", only for responses other than the expected one

local other = {}

function init(args)
  -- id is set by setup() before init() runs.
  thread_template = template:gsub("{t}", tostring(id))
end

function request()
  sent = sent + 1
  local body = thread_template:gsub("{n}", tostring(sent)):gsub("{k}", tostring(sent % 1000))
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status == expected then
    ok = ok + 1
  else
    not_ok = not_ok + 1
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
  local total_ok, total_not_ok = 0, 0
  local by_status = {}
  for _, thread in ipairs(threads) do
    total_ok = total_ok + (thread:get("ok") or 0)
    total_not_ok = total_not_ok + (thread:get("not_ok") or 0)
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

  io.write(string.format("post.lua: %d responses, %d were %d, %d were not%s\n",
    total_ok + total_not_ok, total_ok, expected, total_not_ok,
    total_not_ok > 0 and (" (" .. table.concat(status_json, ", ") .. ")") or ""))
  if socket_errors > 0 then
    io.write(string.format(
      "post.lua: socket errors: connect %d, read %d, write %d, timeout %d\n",
      errors.connect, errors.read, errors.write, errors.timeout))
  end
  io.write(string.format(
    'wrk-json: {"requests":%d,"seconds":%.3f,"requests_per_sec":%.1f,"ok":%d,' ..
    '"ok_per_sec":%.1f,"not_ok":%d,"not_ok_by_status":{%s},' ..
    '"non_2xx_3xx":%d,"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f,"mean":%.3f}}\n',
    summary.requests, seconds, summary.requests / seconds, total_ok,
    total_ok / seconds, total_not_ok, table.concat(status_json, ","),
    errors.status, errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, latency.mean / 1e3))
end
