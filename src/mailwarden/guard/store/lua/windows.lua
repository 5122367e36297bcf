-- windows.lua: the sliding-window rings shared by record.lua and flag.lua.
--
-- Not a script of its own: Redis scripts cannot load one another, so the store's loader
-- (mailwarden.guard.store.redis._script) puts this file in front of each script that uses
-- it. It defines locals only, reads no key and returns nothing.
--
-- A ring is an array {head, c0 .. c(n-1), running total} with the semantics of
-- mailwarden.guard.window.Ring: head is the newest bucket index the ring has advanced to
-- (-1: never used), the count of bucket b sits at index b % n + 2, and the total is kept as
-- buckets come and go. The rings of a user are one table {name = ring} packed with the
-- cmsgpack library Redis builds into its Lua.
--
-- No width or bucket count is written here: spans(i) reads them from the calling script's
-- ARGV[i .. i+5] (1 min width, count; 1 h width, count; 24 h width, count), which the store
-- fills from mailwarden.guard.window.SPANS.

local SPEC = {}
local function spans(i)
  local m = {tonumber(ARGV[i]), tonumber(ARGV[i + 1])}
  local h = {tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])}
  local d = {tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])}
  -- m1 messages; r1 rh rd recipients; xh external recipients; fh refused; ah accepted;
  -- sh sd one subject fingerprint
  SPEC = {m1 = m, r1 = m, rh = h, rd = d, xh = h, fh = h, ah = h, sh = h, sd = d}
end
-- numbers written back as text keep every bit (tostring keeps 14 digits only)
local function num(x)
  return string.format('%.17g', x)
end
local function windows(packed)
  if packed then return cmsgpack.unpack(packed) end
  return {}
end
local function ring(w, name)
  local r = w[name]
  if not r then
    local n = SPEC[name][2]
    r = {-1}
    for i = 2, n + 2 do r[i] = 0 end  -- counts at 2 .. n+1, their running total at n+2
    w[name] = r
  end
  return r
end
local function advance(r, n, idx)
  local head = r[1]
  if idx <= head then return end
  if head < 0 or idx - head >= n then
    for i = 2, n + 2 do r[i] = 0 end
  else
    local running = r[n + 2]
    for b = head + 1, idx do
      local i = b % n + 2
      running = running - r[i]
      r[i] = 0
    end
    r[n + 2] = running
  end
  r[1] = idx
end
local function add(w, name, now, k)
  local spec = SPEC[name]
  local r, n = ring(w, name), spec[2]
  local idx = math.floor(now / spec[1])
  advance(r, n, idx)
  if idx >= r[1] - n + 1 then
    local i = idx % n + 2
    r[i] = r[i] + k
    r[n + 2] = r[n + 2] + k
  end
end
local function total(w, name, now)
  local spec = SPEC[name]
  local r, n = ring(w, name), spec[2]
  advance(r, n, math.floor(now / spec[1]))
  return r[n + 2]
end
-- the user's clock (the scalar hash's field t) never runs backwards: see
-- mailwarden.guard.detector.record; returns the time to count at, as number and as text
local function clock(now_s, kept)
  local now, t = tonumber(now_s), tonumber(kept)
  if t and t > now then return t, kept end
  return now, now_s
end
