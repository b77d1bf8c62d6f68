-- meter_add: an include (--#include meter_add) defining
--   meter_add(key, prefix, slots, now, n): add n to the current second's
--   count in a ring of `slots` fields of hash `key`, fields prefix .. (second
--   mod slots), each "second:count"; a field still holding an older second is
--   started again. Readers sum the fields whose second is recent
--   (producer/monitoring.py), so a ring is as long as the longest window read.
local function meter_add(key, prefix, slots, now, n)
  local second = math.floor(now)
  local field = prefix .. string.format('%d', second % slots)
  local stored = redis.call('HGET', key, field)
  local count = n
  if stored then
    local at, was = string.match(stored, '^(%d+):(%d+)$')
    if tonumber(at) == second then count = count + tonumber(was) end
  end
  redis.call('HSET', key, field, string.format('%d:%d', second, count))
end
