-- Pier's rate-limit decisions, atomically: one or more decisions, each over one or more policies
-- for one caller. It mirrors crates/pier-ratelimit/src/algorithm.rs step for step (read that
-- file for the algorithms); every value stays below 2^53, so Lua's doubles compute the same
-- integers.
--
-- ARGV[1]: now in ms, or "" for Redis's own clock (so nodes never disagree). Then per decision:
-- the number of policies n, cost, consume (1 or 0), and per policy: algorithm (g, f or s),
-- limit, period in ms, capacity. KEYS: each policy's state key, in the same order.
-- State is packed doubles: (tat, frac) for GCRA, (index, count, previous) for the windows.
-- Returns per policy: allowed (1/0), remaining, reset after (ms), retry after (ms). A decision
-- writes its states, each with an expiry, only when consuming and all its policies allow.

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
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

local reply, r, k, a = {}, 0, 0, 2
while a <= #ARGV do
  local n, cost, consume = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2] == '1'
  a = a + 3
  local all, states = true, {}
  for i = 1, n do
    local alg, l, p, cap = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    a = a + 4
    local raw = redis.call('GET', KEYS[k + i])
    local allowed, remaining, reset, retry, packed, expires
    if alg == 'g' then
      local debt = 0
      if raw then
        local tat, frac = struct.unpack('dd', raw)
        if tat >= now then debt = (tat - now) * l + frac end
      end
      local capacity, need = cap * p, cost * p
      allowed = debt + need <= capacity
      local held, after = debt, debt
      retry = 0
      if allowed then
        held = debt + need
        if consume then after = held end
      else
        retry = idiv(debt + need - capacity + l - 1, l)
      end
      remaining = idiv(capacity - held, p)
      reset = idiv(held + l - 1, l)
      local q = idiv(after, l)
      packed = struct.pack('dd', now + q, after - q * l)
      expires = now + idiv(after + l - 1, l)
    else
      local index = idiv(now, p)
      local count, previous = 0, 0
      if raw then
        local stored, c, prev = struct.unpack('ddd', raw)
        if stored == index then
          count, previous = c, prev
        elseif stored == index - 1 and alg == 's' then
          previous = c
        end
      end
      local window_end = (index + 1) * p
      if alg == 'f' then
        allowed = count + cost <= l
        local held = count
        if allowed then held = count + cost end
        remaining, reset, retry = l - held, 0, 0
        if held > 0 then reset = window_end - now end
        if not allowed then retry = window_end - now end
        packed, expires = struct.pack('ddd', index, held, 0), window_end
      else
        local weighted = previous * (p - (now - index * p))
        allowed = weighted + (count + cost) * p <= l * p
        local held = count
        if allowed then held = count + cost end
        remaining = math.max(idiv(l * p - weighted, p) - held, 0)
        local reset_at, retry_at = now, now
        if held > 0 then
          reset_at = window_end + p
        elseif previous > 0 then
          reset_at = window_end
        end
        if not allowed then
          if count + cost <= l then
            retry_at = window_end - idiv((l - count - cost) * p, previous)
          else
            retry_at = window_end + p - idiv((l - cost) * p, count)
          end
        end
        reset, retry = reset_at - now, retry_at - now
        expires = window_end
        if held > 0 then expires = window_end + p end
        packed = struct.pack('ddd', index, held, previous)
      end
    end
    all = all and allowed
    states[i] = packed
    states[n + i] = expires
    reply[r + 1] = allowed and 1 or 0
    reply[r + 2] = remaining
    reply[r + 3] = reset
    reply[r + 4] = retry
    r = r + 4
  end
  if consume and all then
    for i = 1, n do
      redis.call('SET', KEYS[k + i], states[i], 'PX', math.max(states[n + i] - now, 1))
    end
  end
  k = k + n
end
return reply
