-- dedupe_release: give back the claims of a request's recipients that
-- provably sent nothing (worker/pipeline/dedupe.py, Dedupe.release): each
-- key still held by its recipient is deleted; one another recipient has
-- taken over since is left alone.
--
-- KEYS[1..n]: one key per recipient (producer.core.keys.dedupe)
-- ARGV[1]: the job id
-- ARGV[2..n+1]: the recipients' indices, in the keys' order
-- Returns how many claims were given back.
local released = 0
for n, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held and string.match(held, '^(%S+ %S+) ') == ARGV[1] .. ' ' .. ARGV[n + 1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
