-- timeline_add: an include (--#include timeline_add) defining
--   timeline_add(key, n, now, max_buckets): count n recipients accepted at
--   `now` (epoch s) in a job's timeline hash (producer/core/keys.py,
--   timeline): field 'w' is the bucket width in seconds (1 at first), every
--   other field a bucket's start (a multiple of w) -> its count. Once there
--   are more than max_buckets buckets, w doubles and the buckets merge in
--   pairs (again while still too many: a sparse job's may not merge), so the
--   hash never holds more than max_buckets + 1 fields.
local function timeline_add(key, n, now, max_buckets)
  local width = tonumber(redis.call('HGET', key, 'w'))
  if not width then
    width = 1
    redis.call('HSET', key, 'w', 1)
  end
  redis.call('HINCRBY', key, string.format('%d', math.floor(now / width) * width), n)
  while redis.call('HLEN', key) - 1 > max_buckets do
    width = width * 2
    local all = redis.call('HGETALL', key)
    local merged = {}
    for i = 1, #all, 2 do
      if all[i] ~= 'w' then
        local start = math.floor(tonumber(all[i]) / width) * width
        merged[start] = (merged[start] or 0) + tonumber(all[i + 1])
      end
    end
    local fields = {'w', width}
    for start, count in pairs(merged) do
      fields[#fields + 1] = string.format('%d', start)
      fields[#fields + 1] = count
    end
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(fields))
  end
end
