-- record.lua: count one observation into a user's state and return the counters the verdict
-- is made from. The Redis store's copy of mailwarden.guard.detector.record (with
-- _roll_baseline, _subject_counts and _see_network), atomic per user; the verdict itself is
-- then computed in Python by the same assess() as for the other stores. Needs windows.lua in
-- front of it (the loader puts it there). Every number the rules use comes from ARGV, filled
-- from the Python constants; tests/guard/test_store_parity.py holds both to the same verdicts
-- and the same state.
--
-- KEYS[1] - the user's scalar hash: peak (busiest hour, decayed), hidx (current clock hour),
--           hext (external recipients this clock hour), flag (flagged until), psince
--           (profile learning since), ravg and rseen (recipients per message, messages seen),
--           t (the user's clock), p0 .. p23 (hour-of-day profile), w (the packed rings)
-- KEYS[2] - the user's lock (a JSON string; present: the account is locked)
-- KEYS[3] - sorted set: recipient address -> last seen (distinct recipients)
-- KEYS[4] - sorted set: external domain -> last seen (distinct domains, 24 h and 1 h)
-- KEYS[5] - hash: subject fingerprint -> packed {sh, sd rings, t last used}
-- KEYS[6] - hash: client network -> "first seen,last seen"
--
-- ARGV[1]  - now (seconds since the epoch, as Python's repr of a float)
-- ARGV[2]  - 1: keep the distinct sets and subjects (a class with anomaly scoring), else 0
-- ARGV[3]  - 1: the observation is a whole message (count it), else 0
-- ARGV[4]  - the client network ('' unknown)
-- ARGV[5]  - the subject fingerprint ('' none)
-- ARGV[6]  - recipients of the message (0 at RCPT stage)
-- ARGV[7]  - N, the recipients to count
-- ARGV[8..13]  - the window spans (see windows.lua)
-- ARGV[14] - seconds of a clock hour (baseline and profile)
-- ARGV[15] - baseline half-life in days
-- ARGV[16] - longest pause in hours the baseline decays for
-- ARGV[17] - hours added to UTC for the hour of the day
-- ARGV[18] - days of history before the hour-of-day profile is trusted
-- ARGV[19] - hour slots in a day
-- ARGV[20] - messages before the usual recipient count is trusted
-- ARGV[21] - weight of a message in the recipient average
-- ARGV[22] - the message count behind the average stops here
-- ARGV[23] - distinct values kept per sorted set
-- ARGV[24] - window of distinct recipients, seconds
-- ARGV[25] - window of distinct domains, seconds (the long one)
-- ARGV[26] - the short window of distinct domains, seconds
-- ARGV[27] - subject fingerprints kept
-- ARGV[28] - messages per fingerprint counted
-- ARGV[29] - network probation, seconds
-- ARGV[30] - network memory, seconds since last seen
-- ARGV[31] - networks kept
-- ARGV[32] - time to live of the scalar hash (idle user forgotten), seconds
-- ARGV[33] - time to live of the recipient set, seconds
-- ARGV[34] - time to live of the domain set, seconds
-- ARGV[35] - time to live of the subject hash, seconds
-- ARGV[36] - the short windows of distinct domains (novel pace), seconds, comma-separated
-- ARGV[37 .. 36+N] - the recipients; then one external domain per external recipient
--
-- Returns {lock} (the lock's JSON) when the account is locked, else
-- {false, msgs 1m, rcpts 1m, rcpts 1h, rcpts 24h, external rcpts 1h, distinct rcpts 1h,
--  domains 1h, domains 24h, refused 1h, same subject 1h, same subject 24h, new network
--  (0/1), baseline (text), typical rcpts (text), hour profile (text, -1: not trusted),
--  accepted 1h (before this observation), flagged (0/1), then the distinct domains of each
--  short window of ARGV[36] (-1 each when ARGV[2] is 0)}

local h = KEYS[1]
local why = redis.call('GET', KEYS[2])
if why then return {why} end
spans(8)
local distinct = ARGV[2] == '1'
local message = ARGV[3] == '1'
local network, fp = ARGV[4], ARGV[5]
local mrcpts, n = tonumber(ARGV[6]), tonumber(ARGV[7])
local HOUR, half_life = tonumber(ARGV[14]), tonumber(ARGV[15])
local gap_cap, offset = tonumber(ARGV[16]), tonumber(ARGV[17])
local profile_days, slots = tonumber(ARGV[18]), tonumber(ARGV[19])
local rcpt_history, rcpt_alpha = tonumber(ARGV[20]), tonumber(ARGV[21])
local rseen_cap, cap = tonumber(ARGV[22]), tonumber(ARGV[23])
local rcpt_window, dom_window = tonumber(ARGV[24]), tonumber(ARGV[25])
local dom_short = tonumber(ARGV[26])
local max_fps, max_times = tonumber(ARGV[27]), tonumber(ARGV[28])
local probation, memory = tonumber(ARGV[29]), tonumber(ARGV[30])
local max_nets, idle_ttl = tonumber(ARGV[31]), tonumber(ARGV[32])
local rcpt_ttl, dom_ttl, subj_ttl = ARGV[33], ARGV[34], ARGV[35]
local dom_pace = ARGV[36]
local FIRST = 37

local s = redis.call('HMGET', h, 'peak', 'hidx', 'hext', 'flag', 'psince', 'ravg', 'rseen',
  'w', 't')
local now, now_s = clock(ARGV[1], s[9])
local peak = tonumber(s[1]) or 0
local hidx = tonumber(s[2]) or -1
local hext = tonumber(s[3]) or 0
local flagged = now < (tonumber(s[4]) or 0)
local index = math.floor(now / HOUR)
local psince = tonumber(s[5]) or -1
local w = windows(s[8])
if not s[8] and s[2] then
  -- kept by a guard from before the packed windows: drop its per-bucket fields once
  local stale = {}
  for _, f in ipairs(redis.call('HKEYS', h)) do
    if string.find(f, '^%a%w:%d+t?$') then stale[#stale + 1] = f end
  end
  for i = 1, #stale, 500 do  -- 500: within unpack()'s stack limit
    redis.call('HDEL', h, unpack(stale, i, math.min(i + 499, #stale)))
  end
end
for name in pairs(w) do  -- rings no rule reads any more (mh, md: messages per hour, day)
  if not SPEC[name] then w[name] = nil end
end
local out = {}  -- learned fields of h to write back with the windows

-- baseline: fold finished clock hours into the decayed peak unless flagged
if psince < 0 then
  psince = index
  redis.call('HSET', h, 'psince', psince)
end
if hidx < 0 then
  hidx = index
elseif index > hidx then
  peak = peak * (0.5 ^ (1 / (half_life * 24)))
  if not flagged and hext > peak then peak = hext end
  -- the hour-of-day profile: the slot of the finished hour keeps its decayed peak
  if not flagged and hext > 0 then
    local pf = 'p' .. (math.floor(hidx + offset) % slots)
    local pv = (tonumber(redis.call('HGET', h, pf)) or 0) * (0.5 ^ (24 / (half_life * 24)))
    if hext > pv then pv = hext end
    redis.call('HSET', h, pf, num(pv))
  end
  local gap = index - hidx - 1
  if gap > 0 then peak = peak * (0.5 ^ (math.min(gap, gap_cap) / (half_life * 24))) end
  hidx = index
  hext = 0
end

local typical = 0
if message then
  add(w, 'm1', now, 1)
  if mrcpts > 0 then
    local ravg, rseen = tonumber(s[6]) or 0, tonumber(s[7]) or 0
    if rseen >= rcpt_history then typical = ravg end
    if not flagged then
      if rseen == 0 then ravg = mrcpts else ravg = ravg + rcpt_alpha * (mrcpts - ravg) end
      rseen = math.min(rseen + 1, rseen_cap)
      out[#out + 1] = 'ravg'; out[#out + 1] = num(ravg)
      out[#out + 1] = 'rseen'; out[#out + 1] = rseen
    end
  end
end
-- recipients accepted this hour: read before this decision, then counted as accepted;
-- a verdict other than accept takes them back in flag.lua (as memory counts them only
-- after an accept)
local accepted = total(w, 'ah', now)
if n > 0 then
  add(w, 'ah', now, n)
  add(w, 'r1', now, n); add(w, 'rh', now, n); add(w, 'rd', now, n)
  if distinct then
    for i = FIRST, FIRST + n - 1 do redis.call('ZADD', KEYS[3], now_s, ARGV[i]) end
    local ext = 0
    for i = FIRST + n, #ARGV do
      ext = ext + 1
      redis.call('ZADD', KEYS[4], now_s, ARGV[i])
    end
    if ext > 0 then
      add(w, 'xh', now, ext)
      hext = hext + ext
    end
  end
end
local same1, same24 = 0, 0
if message and fp ~= '' and distinct then
  local fh = KEYS[5]
  local packed = redis.call('HGET', fh, fp)
  if not packed then
    -- full: forget the fingerprint used longest ago, the smallest name among equals (as
    -- detector._stalest_subject); one kept by an older guard has no t: its newest bucket
    local all = redis.call('HGETALL', fh)
    if #all / 2 >= max_fps then
      local kept = {}
      for i = 1, #all, 2 do
        local old = cmsgpack.unpack(all[i + 1])
        local last = old.t
        if last == nil then last = old.sh[1] * SPEC.sh[1] end
        kept[#kept + 1] = {last, all[i]}
      end
      table.sort(kept, function(a, b)
        if a[1] ~= b[1] then return a[1] < b[1] end
        return a[2] < b[2]
      end)
      for i = 1, #kept - max_fps + 1 do redis.call('HDEL', fh, kept[i][2]) end
    end
  end
  local fw = windows(packed)
  add(fw, 'sh', now, 1); add(fw, 'sd', now, 1)
  fw.t = now
  same1 = math.min(total(fw, 'sh', now), max_times)
  same24 = math.min(total(fw, 'sd', now), max_times)
  redis.call('HSET', fh, fp, cmsgpack.pack(fw))
  redis.call('EXPIRE', fh, subj_ttl)
end
local new_network = 0
if network ~= '' then
  -- as detector._see_network: forget networks not seen for the memory period; a new one,
  -- when max_nets are kept, takes the place of the least recently seen network on
  -- probation, else of the least recently seen one (ties: the smallest name)
  local nh = KEYS[6]
  local all = redis.call('HGETALL', nh)
  local live, any_known, mine, mine_known = {}, false, nil, false
  local settled = now - probation
  for i = 1, #all, 2 do
    local first_s, last_s = string.match(all[i + 1], '([^,]+),([^,]+)')
    local first, last = tonumber(first_s), tonumber(last_s)
    if last < now - memory then
      redis.call('HDEL', nh, all[i])
    else
      local known = first <= settled
      if known then any_known = true end
      if all[i] == network then mine, mine_known = first_s, known end
      live[#live + 1] = {known and 1 or 0, last, all[i]}
    end
  end
  if mine == nil and not flagged then
    if #live >= max_nets then
      table.sort(live, function(a, b)
        if a[1] ~= b[1] then return a[1] < b[1] end
        if a[2] ~= b[2] then return a[2] < b[2] end
        return a[3] < b[3]
      end)
      for i = 1, #live - max_nets + 1 do redis.call('HDEL', nh, live[i][3]) end
    end
    redis.call('HSET', nh, network, now_s .. ',' .. now_s)
  elseif mine ~= nil then
    redis.call('HSET', nh, network, mine .. ',' .. now_s)
  end
  if any_known and not mine_known then new_network = 1 end
  redis.call('EXPIRE', nh, math.ceil(memory))
end
local profile = -1
if index - psince >= profile_days * slots then
  profile = tonumber(redis.call('HGET', h, 'p' .. (math.floor(index + offset) % slots))) or 0
end
-- distinct values within their windows, at most cap of them (the oldest go first)
local function distinct_count(z, window, ttl)
  redis.call('ZREMRANGEBYSCORE', z, '-inf', num(now - window))
  local count = redis.call('ZCARD', z)
  if count > cap then
    redis.call('ZREMRANGEBYRANK', z, 0, count - cap - 1)
    count = cap
  end
  redis.call('EXPIRE', z, ttl)
  return count
end
local rcpts1 = distinct_count(KEYS[3], rcpt_window, rcpt_ttl)
-- distinct domains of the short window: the long window's set holds each last sighting
local domains24 = distinct_count(KEYS[4], dom_window, dom_ttl)
local domains1 = redis.call('ZCOUNT', KEYS[4], '(' .. num(now - dom_short), '+inf')
local paces = {}
for window in string.gmatch(dom_pace, '[^,]+') do
  local count = -1
  if distinct then
    count = redis.call('ZCOUNT', KEYS[4], '(' .. num(now - tonumber(window)), '+inf')
  end
  paces[#paces + 1] = count
end
local reply = {
  false,
  total(w, 'm1', now), total(w, 'r1', now), total(w, 'rh', now), total(w, 'rd', now),
  total(w, 'xh', now), rcpts1, domains1, domains24, total(w, 'fh', now),
  same1, same24, new_network, num(peak), num(typical), num(profile), accepted,
  flagged and 1 or 0
}
for i = 1, #paces do reply[#reply + 1] = paces[i] end
redis.call('HSET', h, 'peak', num(peak), 'hidx', hidx, 'hext', hext, 't', now_s,
  'w', cmsgpack.pack(w), unpack(out))
redis.call('EXPIRE', h, idle_ttl)
return reply
