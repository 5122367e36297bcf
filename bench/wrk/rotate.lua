-- wrk script: one request per known user, in turn, so that no server can answer from a single
-- cached response.  Usage (after wrk's own options and the URL):
--   -s bench/wrk/rotate.lua URL -- autoconfig|autodiscover USERS_FILE
-- USERS_FILE holds one address per line.  autoconfig sends Thunderbird's
-- GET ?emailaddress=...; autodiscover sends Outlook's POX POST body for the address.
-- All requests are built once in init(); request() only hands the next one out.

local POX = '<?xml version="1.0" encoding="utf-8"?>\n'
  .. '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
  .. '<Request><EMailAddress>%s</EMailAddress>'
  .. '<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>'
  .. '</Request></Autodiscover>\n'

local requests = {}
local count = 0
local next_index = 0

local function urlencode(s)
  return (s:gsub("[^%w%.%-_~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

function init(args)
  local mode, file = args[1], args[2]
  assert(mode == "autoconfig" or mode == "autodiscover", "mode must be autoconfig or autodiscover")
  assert(file, "usage: -- MODE USERS_FILE")
  for line in io.lines(file) do
    local address = line:match("^%s*(%S+)%s*$")
    if address then
      local req
      if mode == "autodiscover" then
        req = wrk.format("POST", wrk.path, { ["Content-Type"] = "text/xml; charset=utf-8" },
                         string.format(POX, address))
      else
        req = wrk.format("GET", wrk.path .. "?emailaddress=" .. urlencode(address), {}, nil)
      end
      count = count + 1
      requests[count] = req
    end
  end
  assert(count > 0, "no addresses in " .. file)
  -- Threads start at different users so they do not walk the list in lockstep.
  next_index = math.random(count) - 1
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end
