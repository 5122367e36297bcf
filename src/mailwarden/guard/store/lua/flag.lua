-- flag.lua: what a refusal changes in a user's state (mailwarden.guard.detector.flag).
--
-- Run after record.lua when the verdict was throttle, hold or lock. Needs windows.lua in
-- front of it (the loader puts it there).
--
-- KEYS[1] - the user's scalar hash (flag, hext, t and the packed rings in w)
-- KEYS[2] - the user's network hash (network -> "first seen,last seen")
--
-- ARGV[1] - now (seconds since the epoch, as Python's repr of a float)
-- ARGV[2] - flag_hours in seconds: learning stops until now + this
-- ARGV[3] - recipients refused (added to the refused ring fh; 0 for a hold)
-- ARGV[4] - recipients record.lua counted as accepted that were not (taken back from ah)
-- ARGV[5] - network probation in seconds: networks first seen more recently are forgotten
-- ARGV[6..11] - the window spans (see windows.lua)
--
-- Returns 1.

spans(6)
local h = KEYS[1]
local s = redis.call('HMGET', h, 'flag', 'w', 't')
local now = clock(ARGV[1], s[3])
local until_, refused = now + tonumber(ARGV[2]), tonumber(ARGV[3])
local w = windows(s[2])
if until_ > (tonumber(s[1]) or 0) then redis.call('HSET', h, 'flag', num(until_)) end
if refused > 0 then add(w, 'fh', now, refused) end
local back = tonumber(ARGV[4]) or 0
if back > 0 then
  local r, width, n = ring(w, 'ah'), SPEC['ah'][1], SPEC['ah'][2]
  local idx = math.floor(now / width)
  if idx <= r[1] and idx >= r[1] - n + 1 then
    local i = idx % n + 2
    local taken = math.min(r[i], back)
    r[i] = r[i] - taken
    r[n + 2] = r[n + 2] - taken
  end
end
redis.call('HSET', h, 'hext', 0, 'w', cmsgpack.pack(w))
local probation = tonumber(ARGV[5])
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local first = tonumber(string.match(all[i + 1], '([^,]+),'))
  if first > now - probation then redis.call('HDEL', KEYS[2], all[i]) end
end
return 1
