-- Pier's rate-limit decisions, atomically: one or more decisions, each over one or more policies
-- for one caller. The script decides only what to write: whether each decision is allowed (so
-- consumes) and the states it leaves. It returns the state every decision read, and the caller
-- derives the whole answer (remaining, reset, retry) from that with algorithm.rs, the code the
-- local store runs, so the two stores can only agree. The arithmetic below mirrors that file;
-- every value stays below 2^53 (see policy.rs, `bounds`), where doubles hold integers exactly
-- and floor(a / b) is exact division.
--
-- ARGV[1]: now in ms, or "" for Redis's own clock (so nodes never disagree). ARGV[2]: the number
-- of policies in the call, then per policy: algorithm (g, f or s), limit, period in ms, capacity.
-- Then runs of alike decisions: how many decisions c, their number of policies n, cost, consume
-- (1 or 0), and n policy positions (1-based, into that list). A run's decisions take the next
-- c × n KEYS, n per decision: each policy's state key, in order.
-- State is packed little-endian doubles: (tat, frac) for GCRA, (index, count, previous) for the
-- windows. A decision writes its states, each with an expiry when it runs out, only when it
-- consumes and all its policies allow.
-- Returns now, then per key the state its decision read (false for none).
--
-- Every state is read up front with MGET, one command for the call: a command from a script
-- costs more than a decision's arithmetic. A key that an earlier decision of the call wrote is
-- read from `written` instead.

local floor, pack, unpack_state = math.floor, struct.pack, struct.unpack

-- Whole milliseconds as text for `PX`: tostring would write 10^14 and above as `1e+14`, which
-- Redis refuses.
local function ms_text(ms)
  return string.format('%d', ms)
end

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end

-- Per policy, with what every decision of the call shares: the windows' current index, the
-- sliding window's weight for the previous count, and their expiry (in ms from now, as text).
local policies = {}
local a = 3
for i = 1, tonumber(ARGV[2]) do
  local alg, l, p, cap = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local policy = { gcra = alg == 'g', fixed = alg == 'f', l = l, p = p, cap = cap, lp = l * p }
  if not policy.gcra then
    local index = floor(now / p)
    local window_end = (index + 1) * p
    policy.index, policy.weight = index, p - (now - index * p)
    -- The sliding window keeps its count for one more window, as the next one's previous.
    policy.ttl = ms_text(policy.fixed and window_end - now or window_end + p - now)
  end
  policies[i] = policy
  a = a + 4
end

-- MGET in slices, as unpack() is bounded by Lua's C stack.
local reply = { now }
for first = 1, #KEYS, 1000 do
  local last = math.min(first + 999, #KEYS)
  local got = redis.call('MGET', unpack(KEYS, first, last))
  for i = 1, last - first + 1 do
    reply[first + i] = got[i]
  end
end

local written, gcra_ttls = {}, {}
local states, ttls = {}, {}
local k = 0
while a <= #ARGV do
  local c, n, cost, consume = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3] == '1'
  local positions = {}
  for i = 1, n do
    positions[i] = policies[tonumber(ARGV[a + 3 + i])]
  end
  a = a + 4 + n
  for _ = 1, c do
    local all = true
    for i = 1, n do
      local key, policy = KEYS[k + i], positions[i]
      local raw = written[key]
      if raw then
        reply[k + i + 1] = raw
      else
        raw = reply[k + i + 1]
      end
      local l, p = policy.l, policy.p
      local allowed
      if policy.gcra then
        local debt = 0
        if raw then
          local tat, frac = unpack_state('<dd', raw)
          if tat >= now then debt = (tat - now) * l + frac end
        end
        local after = debt + cost * p
        allowed = after <= policy.cap * p
        if allowed then
          local whole = floor(after / l)
          local frac = after - whole * l
          local ttl = whole
          if frac > 0 then ttl = whole + 1 end
          local text = gcra_ttls[ttl]
          if not text then
            text = ms_text(ttl)
            gcra_ttls[ttl] = text
          end
          states[i], ttls[i] = pack('<dd', now + whole, frac), text
        end
      else
        local index, count, previous = policy.index, 0, 0
        if raw then
          local stored, held, before = unpack_state('<ddd', raw)
          if stored == index then
            count, previous = held, before
          elseif stored == index - 1 then
            previous = held
          end
        end
        if policy.fixed then
          allowed = count + cost <= l
          previous = 0
        else
          allowed = previous * policy.weight + (count + cost) * p <= policy.lp
        end
        if allowed then
          states[i], ttls[i] = pack('<ddd', index, count + cost, previous), policy.ttl
        end
      end
      all = all and allowed
    end
    if consume and all then
      for i = 1, n do
        local key = KEYS[k + i]
        redis.call('SET', key, states[i], 'PX', ttls[i])
        written[key] = states[i]
      end
    end
    k = k + n
  end
end
return reply
