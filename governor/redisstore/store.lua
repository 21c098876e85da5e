-- Sluice governor state on Redis: one script, loaded once and run with
-- EVALSHA, dispatched on ARGV[1]. Every operation on any number of keys is
-- atomic (Redis runs a script alone), which gives the Store contract's
-- all-or-nothing acquisition in one round trip.
--
-- Times. Decision times (token buckets, quotas, suspensions...) are stored
-- as decimal strings of Unix nanoseconds and handled inside the script as
-- offsets in nanoseconds from "now" (doubles are exact up to 2^53 ns, about
-- 104 days, far beyond any offset that matters). "now" is the caller's time
-- (ARGV[2] seconds, ARGV[3] nanoseconds) or, when ARGV[2] is empty, the
-- server's TIME. Offsets in and out are relative to that now, so that the
-- Go side converts them with its own Request.Now. Leases (holders and
-- waiters) always use the server's TIME in milliseconds: they are about
-- processes being alive, not about the caller's clock.
--
-- KEYS[1] is the key registry (a sorted set of governor keys by last use);
-- then five Redis keys per governor key i, at 1+5(i-1)+1..5:
--   S hash of state, H sorted set of holder tickets by lease expiry,
--   Q sorted set of waiting tickets by arrival, X hash ticket -> "expiry owner",
--   R list of grant times of a rolling quota, oldest first.
--
-- Common ARGV: 1 op, 2 now seconds ('' = server TIME), 3 now nanoseconds,
-- 4 lease ms, 5 idle ms (<0: never expire), 6 owner id, 7 wake channel
-- prefix, 8 number of governor keys; op-specific arguments follow.

local op = ARGV[1]
local tm = redis.call('TIME')
local NOWMS = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local NS, NN
if ARGV[2] == '' then
  NS, NN = tonumber(tm[1]), tonumber(tm[2]) * 1000
else
  NS, NN = tonumber(ARGV[2]), tonumber(ARGV[3])
end
local LEASE = tonumber(ARGV[4])
local IDLE = tonumber(ARGV[5])
local OWNER = ARGV[6]
local CHAN = ARGV[7]
local N = tonumber(ARGV[8])
local MAXI = 2305843009213693951 -- math.MaxInt64/4, the engine's cap

-- limit kinds, as governor.LimitKind
local L_CONC, L_QUEUE, L_RATE, L_CRATE, L_QUOTA, L_WINDOW, L_SUSP = 1, 2, 3, 4, 5, 6, 7

local function I(x) return string.format('%d', x) end

-- rel converts a stored time to an offset from now in ns (nil if unset).
local function rel(s)
  if not s then return nil end
  local n = #s
  if n <= 9 then return (0 - NS) * 1e9 + (tonumber(s) - NN) end
  return (tonumber(string.sub(s, 1, n - 9)) - NS) * 1e9 + (tonumber(string.sub(s, n - 8)) - NN)
end

-- abs converts an offset from now in ns to a stored time.
local function abs(r)
  local t = NN + math.floor(r)
  local hi = math.floor(t / 1e9)
  local lo = t - hi * 1e9
  local sec = NS + hi
  if sec < 0 then return '0' end
  if sec == 0 then return I(lo) end
  return string.format('%d%09d', sec, lo)
end

local DEFAULT_L = '0 0 0 1 0 1 0 0 0 - 1 0.5 600000000000 0 300000000000 0.5 600000000000 30000000000 0'

local function parseL(s)
  if not s or s == '' then s = DEFAULT_L end
  local f = {}
  for w in string.gmatch(s, '%S+') do f[#f + 1] = w end
  return {
    maxc = tonumber(f[1]), initial = tonumber(f[2]),
    ival = tonumber(f[3]), burst = tonumber(f[4]),
    civl = tonumber(f[5]), cburst = tonumber(f[6]),
    qmax = tonumber(f[7]), qwin = tonumber(f[8]), qcal = f[9], qsig = f[10],
    inc = tonumber(f[11]), dec = tonumber(f[12]), probe = tonumber(f[13]),
    cohort = tonumber(f[14]), suspfor = tonumber(f[15]), rfac = tonumber(f[16]),
    rfor = tonumber(f[17]), rpause = tonumber(f[18]), limited = f[19] == '1',
  }
end

local FIELDS = {'L', 'eff', 'ad', 'capAt', 'capU', 'lastDec', 'fail', 'rmul', 'rU', 'lrc',
  'tat', 'ctat', 'qc', 'qE', 'qS', 'qF', 'sU', 'sR', 'rsn', 'lu'}

-- load reads governor key i (1-based) with limits ls: always when force
-- (the request's policy), else only when S has none.
local function load(i, name, ls, force)
  local b = 1 + (i - 1) * 5
  local e = {name = name, S = KEYS[b + 1], H = KEYS[b + 2], Q = KEYS[b + 3], X = KEYS[b + 4], R = KEYS[b + 5], dirty = {}, touched = {}}
  local v = redis.call('HMGET', e.S, unpack(FIELDS))
  for j, f in ipairs(FIELDS) do
    if v[j] then e[f] = v[j] end
  end
  if not force and e.L then ls = e.L end
  if not ls or ls == '' then ls = DEFAULT_L end
  if e.L ~= ls then e.L = ls; e.dirty.L = true end
  e.l = parseL(ls)
  return e
end

local function set(e, f, v)
  e[f] = v
  e.dirty[f] = true
end

-- extend sets a key's time to live to at least ttl ms.
local function extend(k, ttl)
  local p = redis.call('PTTL', k)
  if p == -2 then return end
  if p == -1 or p < ttl then redis.call('PEXPIRE', k, ttl) end
end

-- The registry has no time to live: it is pruned (entries scored by
-- when their key may be gone) whenever a key joins it, and by renewals.
local NEWKEYS = 0

local function touch(e, k) e.touched[#e.touched + 1] = k end

local function finish()
  if NEWKEYS > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', NOWMS) end
end

local function save(e)
  local hs, hd = {}, {}
  for f, _ in pairs(e.dirty) do
    if e[f] == nil then
      hd[#hd + 1] = f
    else
      hs[#hs + 1] = f
      hs[#hs + 1] = e[f]
    end
  end
  if #hs > 0 then redis.call('HSET', e.S, unpack(hs)) end
  if #hd > 0 then redis.call('HDEL', e.S, unpack(hd)) end
  e.dirty = {}
  local keep = NOWMS + 1e13
  if IDLE >= 0 then
    -- keep the key while any time in it is ahead, plus the idle timeout
    local ahead = 0
    for _, f in ipairs({'tat', 'ctat', 'sU', 'rU', 'capU', 'qE'}) do
      local r = rel(e[f])
      if r and r > ahead then ahead = r end
    end
    if e.l.qmax > 0 and e.l.qcal == '0' then
      local last = redis.call('LINDEX', e.R, -1)
      if last then
        local r = rel(last) + e.l.qwin
        if r > ahead then ahead = r end
      end
    end
    if ahead > 3.15e17 then ahead = 3.15e17 end -- ten years
    local ttl = IDLE + LEASE + math.floor(ahead / 1e6)
    -- only the keys written: the others keep the time to live they got
    -- when written (renewals extend holders and waiters)
    redis.call('PEXPIRE', e.S, ttl)
    for _, k in ipairs(e.touched) do redis.call('PEXPIRE', k, ttl) end
    keep = NOWMS + ttl
  end
  -- the registry scores keys by when they may be gone
  NEWKEYS = NEWKEYS + redis.call('ZADD', KEYS[1], 'GT', keep, e.name)
end

local function effv(e)
  if e.ad == '1' then return tonumber(e.eff) end
  return e.l.initial
end

-- slots is the effective concurrency; 0: unlimited.
local function slots(e)
  local m = e.l.maxc
  if m == 0 then return 0 end
  local s = math.floor(effv(e))
  if s > m then s = m end
  if s < 1 then s = 1 end
  return s
end

-- ivl is an emission interval with a RateLimited penalty applied.
local function ivl(e, base)
  if base == 0 then return 0 end
  local ru = rel(e.rU)
  if not ru or ru <= 0 then return base end
  local v = base / tonumber(e.rmul)
  if v > MAXI then return MAXI end
  return math.floor(v)
end

-- ready is when the next token of a GCRA bucket is available (offset >= 0).
local function ready(tat, iv, burst)
  if not tat or tat < 0 then tat = 0 end
  local r = tat + iv - iv * burst
  if r < 0 then return 0 end
  return r
end

local function reap(e)
  return redis.call('ZREMRANGEBYSCORE', e.H, '-inf', NOWMS)
end

-- head returns the oldest live waiter of e and its info, dropping dead ones.
-- A live head found behind dead ones is woken: nobody else would.
local function head(e)
  local purged = false
  while true do
    local h = redis.call('ZRANGE', e.Q, 0, 0)[1]
    if not h then return nil end
    local info = redis.call('HGET', e.X, h)
    if info then
      local exp = tonumber(string.match(info, '^(%S+)'))
      if exp and exp > NOWMS then
        if purged then
          local owner = string.match(info, '^%S+ (%S+)')
          if owner then redis.call('PUBLISH', CHAN .. owner, h) end
        end
        return h, info
      end
    end
    redis.call('ZREM', e.Q, h)
    redis.call('HDEL', e.X, h)
    purged = true
  end
end

-- wake tells e's head waiter to look again.
local function wake(e)
  local h, info = head(e)
  if h then
    local owner = string.match(info, '^%S+ (%S+)')
    if owner then redis.call('PUBLISH', CHAN .. owner, h) end
  end
end

-- dequeue removes ticket from e's queue, waking the new head if it led.
local function dequeue(e, ticket)
  local r = redis.call('ZRANK', e.Q, ticket)
  if not r then return end
  redis.call('ZREM', e.Q, ticket)
  redis.call('HDEL', e.X, ticket)
  if r == 0 then wake(e) end
end

local function dropExpired(e)
  local l = e.l
  while true do
    local v = redis.call('LINDEX', e.R, 0)
    if not v or rel(v) > -l.qwin then return end
    redis.call('LPOP', e.R)
  end
end

-- quotaFull reports whether e's quota is used up now, and when a unit frees.
local function quotaFull(e, qend)
  local l = e.l
  if l.qcal ~= '0' then
    local qc = tonumber(e.qc) or 0
    local qe = rel(e.qE)
    if qe == nil or qe <= 0 or e.qS ~= l.qsig then
      if qe == nil or qe <= 0 then
        -- a new count: units granted before now are not in it (see cancel)
        qc = 0
        set(e, 'qF', abs(0))
      end
      qe = math.max(qend, 1) -- a period always ends after now
      set(e, 'qc', qc)
      set(e, 'qE', abs(qe))
      set(e, 'qS', l.qsig)
    end
    if qc >= l.qmax then return true, qe end
    return false, 0
  end
  dropExpired(e)
  local n = redis.call('LLEN', e.R)
  if n >= l.qmax then
    return true, rel(redis.call('LINDEX', e.R, n - l.qmax)) + l.qwin
  end
  return false, 0
end

local function suspend(e, off, reason)
  local su = rel(e.sU)
  if not su or off > su then
    set(e, 'sU', abs(off))
    set(e, 'sR', reason)
  end
end

if op == 'reserve' then
  -- ARGV 9 kind ('1' slot, '2' event), 10 ticket, 11 try, 12 deadline offset
  -- or '', 13 the key whose queue holds the ticket or '', then per key:
  -- name, limits, window (0 open, -1 never, else the offset of its
  -- opening), calendar quota period end offset.
  local kind, ticket, try = ARGV[9], ARGV[10], ARGV[11] == '1'
  local deadline = nil
  if ARGV[12] ~= '' then deadline = tonumber(ARGV[12]) end
  local qname = ARGV[13]
  local ents = {}
  local vidx, vlim, vretry, vreason = -1, 0, -1, ''
  local function consider(i, k, at, reason)
    if vidx >= 0 and (vretry == -1 or (at ~= -1 and at <= vretry)) then return end
    vidx, vlim, vretry, vreason = i, k, at, reason
  end
  local rs, ri, rk = 0, -1, 0
  for i = 1, N do
    local a = 13 + (i - 1) * 4
    local e = load(i, ARGV[a + 1], ARGV[a + 2], true)
    local l = e.l
    ents[i] = e
    local win, qend = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    local su = rel(e.sU)
    if su and su > 0 then consider(i, L_SUSP, su, e.sR or '') end
    if win ~= 0 then consider(i, L_WINDOW, win, '') end
    local h = head(e)
    if h and (try or h ~= ticket) then consider(i, L_QUEUE, -1, '') end
    if kind == '1' then
      local s = slots(e)
      if s > 0 then
        -- dead holders are reaped only when they would make a difference
        e.held = redis.call('ZCARD', e.H)
        if e.held >= s then
          e.reaped = reap(e)
          if e.reaped > 0 then e.held = redis.call('ZCARD', e.H) end
          if e.held >= s then consider(i, L_CONC, -1, '') end
        end
      end
      if l.civl > 0 then
        local r = ready(rel(e.ctat), ivl(e, l.civl), l.cburst)
        if r > rs then rs, ri, rk = r, i, L_CRATE end
      end
    else
      if l.qmax > 0 then
        local full, at = quotaFull(e, qend)
        if full then consider(i, L_QUOTA, at, '') end
      end
      if l.ival > 0 then
        local r = ready(rel(e.tat), ivl(e, l.ival), l.burst)
        if r > rs then rs, ri, rk = r, i, L_RATE end
      end
    end
  end
  local ok = false
  if vidx < 0 then
    if ri >= 0 and (try or (deadline and rs > deadline)) then
      vidx, vlim, vretry = ri, rk, rs
    else
      ok = true
    end
  end
  if ok then
    for _, e in ipairs(ents) do
      local l = e.l
      if kind == '1' then
        redis.call('ZADD', e.H, NOWMS + LEASE, ticket)
        -- a new set needs a time to live; an old one has one, kept by renewals
        if not e.held or e.held == 0 then touch(e, e.H) end
        if l.civl > 0 then
          set(e, 'ctat', abs(math.max(rel(e.ctat) or 0, 0) + ivl(e, l.civl)))
        end
      else
        if l.ival > 0 then
          set(e, 'tat', abs(math.max(rel(e.tat) or 0, 0) + ivl(e, l.ival)))
        end
        if l.qmax > 0 then
          if l.qcal ~= '0' then
            set(e, 'qc', (tonumber(e.qc) or 0) + 1)
          else
            local sv = abs(rs)
            local last = redis.call('LINDEX', e.R, -1)
            touch(e, e.R)
            if not last or rel(last) <= rs then
              redis.call('RPUSH', e.R, sv)
            else
              for _, v in ipairs(redis.call('LRANGE', e.R, 0, -1)) do
                if rel(v) > rs then
                  redis.call('LINSERT', e.R, 'BEFORE', v, sv)
                  break
                end
              end
            end
          end
        end
      end
      set(e, 'lu', abs(0))
      if e.name == qname then dequeue(e, ticket) end
    end
  elseif try or vlim == L_RATE or vlim == L_CRATE then
    -- Try never queues; tokens due after the deadline: the caller gives up
    for _, e in ipairs(ents) do
      if e.name == qname then dequeue(e, ticket) end
    end
  else
    for i, e in ipairs(ents) do
      if i == vidx then
        if not redis.call('ZSCORE', e.Q, ticket) then
          local tail = redis.call('ZRANGE', e.Q, -1, -1, 'WITHSCORES')
          local seq = 1
          if tail[2] then seq = tonumber(tail[2]) + 1 end
          redis.call('ZADD', e.Q, seq, ticket)
        end
        redis.call('HSET', e.X, ticket, I(NOWMS + LEASE) .. ' ' .. OWNER)
        touch(e, e.Q)
        touch(e, e.X)
      elseif e.name == qname then
        dequeue(e, ticket)
      end
    end
  end
  for _, e in ipairs(ents) do
    save(e)
    if e.reaped and e.reaped > 0 then wake(e) end
  end
  finish()
  if ok then
    local d = -1
    if ri >= 0 then d = ri - 1 end
    -- the grant's token: when its calendar units were counted, and the
    -- stamp of its rolling units (see cancel)
    return {1, I(rs), d, rk, abs(0) .. ' ' .. abs(rs)}
  end
  return {0, I(vretry), vidx - 1, vlim, vreason}
end

if op == 'cancel' then
  -- ARGV 9 kind, 10 ticket, 11 undo ('1': give back what the grant took;
  -- '2': only drop its holds, a clean-up after a lost reply), 12 grant start
  -- offset, 13 when the grant counted its calendar units and 14 the stamp
  -- of its rolling units (both stored times from the grant's token, or ''),
  -- 15 how long a cancelled event's ticket is remembered (ms); then per
  -- key: name, fallback limits. KEYS[2 + 5N] is the sorted set of
  -- cancelled event tickets by when they are forgotten: a second cancel of
  -- a granted event gives back nothing more.
  local kind, ticket, undo, tc = ARGV[9], ARGV[10], ARGV[11], tonumber(ARGV[12])
  local counted, stamp, remember = ARGV[13], ARGV[14], tonumber(ARGV[15])
  if undo == '1' and kind == '2' then
    local C = KEYS[2 + 5 * N]
    redis.call('ZREMRANGEBYSCORE', C, '-inf', NOWMS)
    if redis.call('ZADD', C, 'NX', NOWMS + remember, ticket) == 0 then
      undo = '0' -- cancelled already: only leave the queues
    end
    redis.call('PEXPIRE', C, remember)
  end
  -- the commit time of the grant: its token's, else its start (later or equal)
  local cm = tc
  if counted ~= '' then cm = rel(counted) end
  for i = 1, N do
    local a = 15 + (i - 1) * 2
    local e = load(i, ARGV[a + 1], ARGV[a + 2])
    local l = e.l
    if undo == '2' then
      if redis.call('ZREM', e.H, ticket) > 0 then wake(e) end
    elseif undo == '1' then
      if kind == '1' then
        redis.call('ZREM', e.H, ticket)
        local c = rel(e.ctat)
        if l.civl > 0 and c and c > 0 then set(e, 'ctat', abs(math.max(c - ivl(e, l.civl), 0))) end
      else
        local c = rel(e.tat)
        if l.ival > 0 and c and c > 0 then set(e, 'tat', abs(math.max(c - ivl(e, l.ival), 0))) end
        if l.qmax > 0 then
          if l.qcal ~= '0' then
            -- only into the count the unit went into: the period must
            -- still be current, and the count must not have restarted
            -- (qF) since the grant
            local qe, qc, qf = rel(e.qE), tonumber(e.qc) or 0, rel(e.qF)
            if qe and qe > 0 and qc > 0 and (not qf or cm >= qf) then set(e, 'qc', qc - 1) end
          elseif stamp ~= '' then
            -- the very unit of this grant, if still in the window
            redis.call('LREM', e.R, -1, stamp)
          else
            -- no token: the entry nearest the grant's start
            local best, bd = nil, nil
            for _, v in ipairs(redis.call('LRANGE', e.R, 0, -1)) do
              local d = math.abs(rel(v) - tc)
              if not bd or d < bd then best, bd = v, d end
            end
            if best then redis.call('LREM', e.R, -1, best) end
          end
        end
      end
      set(e, 'lu', abs(0))
      wake(e)
    end
    dequeue(e, ticket)
    save(e)
  end
  finish()
  return 1
end

if op == 'release' then
  -- ARGV 9 ticket; then per key: name, fallback limits. Lean: the keys'
  -- times to live were set when the slot was granted and by renewals.
  local ticket = ARGV[9]
  for i = 1, N do
    local b = 1 + (i - 1) * 5
    local e = {S = KEYS[b + 1], H = KEYS[b + 2], Q = KEYS[b + 3], X = KEYS[b + 4]}
    if redis.call('ZREM', e.H, ticket) > 0 then
      redis.call('HSET', e.S, 'lu', abs(0))
      if IDLE >= 0 and redis.call('PTTL', e.S) == -1 then redis.call('PEXPIRE', e.S, IDLE + LEASE) end
    end
    wake(e)
  end
  return 1
end

if op == 'feedback' then
  -- ARGV 9 name, 10 limits, 11 signal kind, 12 started offset, 13 reason
  local e = load(1, ARGV[9], ARGV[10], true)
  local l = e.l
  local kind, started, reason = ARGV[11], tonumber(ARGV[12]), ARGV[13]
  if reason ~= '' then set(e, 'rsn', reason) end
  set(e, 'lu', e.lu or abs(0))
  if kind == '1' then -- Success
    set(e, 'fail', 0)
    if l.maxc > 0 then
      local old = slots(e)
      local eff = effv(e)
      local nn = eff + l.inc / math.max(eff, 1)
      local cu = rel(e.capU)
      if cu and cu > 0 and nn > tonumber(e.capAt) then nn = math.max(tonumber(e.capAt), eff) end
      nn = math.min(nn, l.maxc)
      if nn ~= eff then
        set(e, 'eff', nn)
        set(e, 'ad', '1')
      end
      if slots(e) > old then wake(e) end
    end
  elseif kind == '2' then -- Congestion
    local ld = rel(e.lastDec)
    if l.maxc > 0 and (not ld or started > ld) then
      set(e, 'lastDec', abs(0))
      local eff = effv(e)
      local nn = math.max(eff * l.dec, 1)
      reap(e)
      -- the receiver accepted the other holders; reported after the
      -- release (no other holder) it accepted one fewer than allowed
      local held = redis.call('ZCARD', e.H)
      local seen = held - 1
      if held <= 1 then seen = math.floor(eff) - 1 end
      seen = math.max(seen, 1)
      set(e, 'capAt', math.min(math.max(nn, seen), math.max(eff, 1)))
      set(e, 'capU', abs(l.probe))
      set(e, 'eff', nn)
      set(e, 'ad', '1')
    end
  elseif kind == '3' then -- RateLimited
    if not l.limited then
      suspend(e, l.rpause, 'rate limited: ' .. reason)
    else
      local ru = rel(e.rU)
      local expired = not ru or ru <= 0
      local rm = tonumber(e.rmul) or 1
      if expired then rm = 1 end
      local lrc = rel(e.lrc)
      if expired or not lrc or started > lrc then
        rm = math.max(rm * l.rfac, 1e-6)
        set(e, 'lrc', abs(0))
      end
      set(e, 'rmul', rm)
      set(e, 'rU', abs(l.rfor))
    end
  elseif kind == '4' then -- Failure
    local f = (tonumber(e.fail) or 0) + 1
    local n = l.cohort
    if n == 0 then
      n = 5
      if l.maxc > 0 then n = slots(e) end
    end
    if f >= n then
      f = 0
      suspend(e, l.suspfor, 'failed cohort of ' .. I(n) .. ': ' .. reason)
    end
    set(e, 'fail', f)
  end
  save(e)
  finish()
  return 1
end

if op == 'suspend' or op == 'resume' then
  -- ARGV 9 name, 10 fallback limits, 11 until offset, 12 reason
  local e = load(1, ARGV[9], ARGV[10])
  if op == 'resume' then
    set(e, 'sU', nil)
    set(e, 'fail', 0)
  else
    set(e, 'sU', abs(tonumber(ARGV[11])))
    set(e, 'sR', ARGV[12])
    if ARGV[12] ~= '' then set(e, 'rsn', ARGV[12]) end
  end
  wake(e)
  save(e)
  finish()
  return 1
end

if op == 'renew' then
  -- ARGV 9..: per governor key: name, then a count c and c pairs of
  -- (type 'h' holder or 'w' waiter, ticket). Holders are (re)registered
  -- with a fresh lease: after a Redis restart that lost the data, live
  -- holders count again. Waiters keep their lease only if still queued;
  -- keys with local waiters are reaped, and their heads woken if a dead
  -- holder's slot or a dead head's place came back. Returns the waiters
  -- that lost their place (their lease lapsed): they must retry.
  local lost = {}
  local a = 9
  for i = 1, N do
    local b = 1 + (i - 1) * 5
    local e = {name = ARGV[a], S = KEYS[b + 1], H = KEYS[b + 2], Q = KEYS[b + 3], X = KEYS[b + 4], R = KEYS[b + 5]}
    local c = tonumber(ARGV[a + 1])
    a = a + 2
    local waiting = false
    for _ = 1, c do
      local ty, ticket = ARGV[a], ARGV[a + 1]
      a = a + 2
      if ty == 'h' then
        redis.call('ZADD', e.H, NOWMS + LEASE, ticket)
      elseif redis.call('HEXISTS', e.X, ticket) == 1 then
        redis.call('HSET', e.X, ticket, I(NOWMS + LEASE) .. ' ' .. OWNER)
        waiting = true
      else
        lost[#lost + 1] = ticket
      end
    end
    if waiting then
      if reap(e) > 0 then wake(e) else head(e) end
    end
    local keep = NOWMS + 1e13
    if IDLE >= 0 then
      local ttl = IDLE + LEASE
      extend(e.S, ttl)
      extend(e.H, ttl)
      extend(e.Q, ttl)
      extend(e.X, ttl)
      keep = NOWMS + ttl
    end
    redis.call('ZADD', KEYS[1], 'GT', keep, e.name)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', NOWMS)
  return lost
end

if op == 'snapshot' then
  -- ARGV 9..: names. Returns per live key: name, held, waiting, slots,
  -- event interval, burst, tat offset, connection interval, connection
  -- burst, ctat offset, qmax, quota used, quota resets offset, suspended
  -- until offset, last reason, last used offset ('' when unset).
  local out = {}
  for i = 1, N do
    local name = ARGV[8 + i]
    local b = 1 + (i - 1) * 5
    if redis.call('EXISTS', KEYS[b + 1]) == 0 and redis.call('EXISTS', KEYS[b + 2]) == 0 and redis.call('EXISTS', KEYS[b + 3]) == 0 then
      redis.call('ZREM', KEYS[1], name)
    else
      local e = load(i, name, '')
      e.dirty = {}
      local l = e.l
      reap(e)
      head(e)
      local function o(s)
        local r = rel(s)
        if r then return I(r) end
        return ''
      end
      local used, resets = 0, ''
      if l.qmax > 0 then
        if l.qcal ~= '0' then
          local qe = rel(e.qE)
          if qe and qe > 0 then
            used = tonumber(e.qc) or 0
            if used > 0 then resets = I(qe) end
          end
        else
          dropExpired(e)
          used = redis.call('LLEN', e.R)
          if used > 0 then resets = I(rel(redis.call('LINDEX', e.R, 0)) + l.qwin) end
        end
      end
      local su = rel(e.sU)
      local sus = ''
      if su and su > 0 then sus = I(su) end
      out[#out + 1] = {name, I(redis.call('ZCARD', e.H)), I(redis.call('ZCARD', e.Q)), I(slots(e)),
        I(ivl(e, l.ival)), I(l.burst), o(e.tat), I(ivl(e, l.civl)), I(l.cburst), o(e.ctat),
        I(l.qmax), I(used), resets, sus, e.rsn or '', o(e.lu)}
    end
  end
  return out
end

return redis.error_reply('sluice: unknown op ' .. tostring(op))
