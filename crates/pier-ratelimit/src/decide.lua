-- Pier's rate-limit decision over several policies for one caller, atomically.
-- It mirrors crates/pier-ratelimit/src/algorithm.rs step for step (read that file for the
-- algorithms); every value stays below 2^53, so Lua's doubles compute the same integers.
--
-- KEYS[i]: policy i's state for the caller ("tat frac" for GCRA, "index count previous" for windows).
-- ARGV: cost, consume (1 or 0), now in ms ("" = Redis's own clock, so nodes never disagree), then
-- per policy: algorithm (g, f or s), limit, period in ms, capacity.
-- Returns per policy: allowed (1/0), remaining, reset after (ms), retry after (ms). State is
-- written, with an expiry, only when consuming and every policy allows.

local cost = tonumber(ARGV[1])
local consume = ARGV[2] == '1'
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- floor(a / b) for 0 <= a, 0 < b, corrected for the rounding of the double quotient.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function ceil_div(a, b)
  return idiv(a + b - 1, b)
end

local function fields(raw)
  local v = {}
  if raw then
    for n in string.gmatch(raw, '%-?%d+') do
      v[#v + 1] = tonumber(n)
    end
  end
  return v
end

local function gcra(s, l, p, cap)
  local debt = 0
  if s[2] and s[1] >= now then
    debt = (s[1] - now) * l + s[2]
  end
  local capacity, need = cap * p, cost * p
  local allowed = debt + need <= capacity
  local after, held, retry = debt, debt, 0
  if allowed then
    held = debt + need
    if consume then after = held end
  else
    retry = ceil_div(debt + need - capacity, l)
  end
  local q = idiv(after, l)
  local nxt = string.format('%d %d', now + q, after - q * l)
  return allowed, idiv(capacity - held, p), ceil_div(held, l), retry, nxt, now + ceil_div(after, l)
end

local function fixed_window(s, l, p)
  local index = idiv(now, p)
  local count = 0
  if s[2] and s[1] == index then count = s[2] end
  local allowed = count + cost <= l
  local held = count
  if allowed then held = count + cost end
  local ends = (index + 1) * p
  local reset, retry = 0, 0
  if held > 0 then reset = ends - now end
  if not allowed then retry = ends - now end
  return allowed, l - held, reset, retry, string.format('%d %d 0', index, held), ends
end

local function sliding_window(s, l, p)
  local index = idiv(now, p)
  local elapsed = now - index * p
  local count, previous = 0, 0
  if s[3] and s[1] == index then
    count, previous = s[2], s[3]
  elseif s[3] and s[1] == index - 1 then
    previous = s[2]
  end
  local weighted = previous * (p - elapsed)
  local allowed = weighted + (count + cost) * p <= l * p
  local held = count
  if allowed then held = count + cost end
  local remaining = math.max(idiv(l * p - weighted, p) - held, 0)
  local window_end = (index + 1) * p
  local reset_at = now
  if held > 0 then
    reset_at = window_end + p
  elseif previous > 0 then
    reset_at = window_end
  end
  local retry_at = now
  if not allowed then
    if count + cost <= l then
      retry_at = index * p + p - idiv((l - count - cost) * p, previous)
    else
      retry_at = window_end + p - idiv((l - cost) * p, count)
    end
  end
  local expires = window_end
  if held > 0 then expires = window_end + p end
  return allowed, remaining, reset_at - now, retry_at - now,
    string.format('%d %d %d', index, held, previous), expires
end

local reply, writes, all = {}, {}, true
for i = 1, #KEYS do
  local at = 3 + (i - 1) * 4
  local alg, l, p, cap = ARGV[at + 1], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local s = fields(redis.call('GET', KEYS[i]))
  local allowed, remaining, reset, retry, nxt, expires
  if alg == 'g' then
    allowed, remaining, reset, retry, nxt, expires = gcra(s, l, p, cap)
  elseif alg == 'f' then
    allowed, remaining, reset, retry, nxt, expires = fixed_window(s, l, p)
  else
    allowed, remaining, reset, retry, nxt, expires = sliding_window(s, l, p)
  end
  all = all and allowed
  writes[i] = { nxt, expires }
  reply[#reply + 1] = allowed and 1 or 0
  reply[#reply + 1] = remaining
  reply[#reply + 1] = reset
  reply[#reply + 1] = retry
end

if consume and all then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], writes[i][1], 'PX', math.max(writes[i][2] - now, 1))
  end
end
return reply
