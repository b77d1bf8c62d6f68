-- server_now: an include (--#include server_now) defining
--   server_now(): the server's clock (TIME) in epoch seconds, so that hosts
--   with skewed clocks agree.
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
