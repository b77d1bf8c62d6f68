-- dedupe_claim: claim sending one content to each of a request's recipients
-- within the job's dedupe_minutes, across every job and worker
-- (worker/pipeline/dedupe.py, Dedupe.claim). A key holds "job index ms": the
-- job and recipient that claimed it and when (server clock). A key held by
-- this very recipient (an earlier pass of it: a retry, a failover) is its
-- own, kept as it is. A key held by another recipient within this job's
-- window is a duplicate; an older one is taken over, and keeps the longer of
-- its remaining life and this window.
--
-- KEYS[1..n]: one key per recipient (producer.core.keys.dedupe)
-- ARGV[1]: the window (ms)
-- ARGV[2]: the job id
-- ARGV[3..n+2]: the recipients' indices, in the keys' order
-- Returns one string per key: '' (claimed, or already its own), else the
-- holder's value (a duplicate).
--#include server_now
local now = string.format('%.0f', math.floor(server_now() * 1000))
local window = tonumber(ARGV[1])
local answers = {}
for n, key in ipairs(KEYS) do
  local mine = ARGV[2] .. ' ' .. ARGV[n + 2]
  local answer = ''
  if not redis.call('SET', key, mine .. ' ' .. now, 'NX', 'PX', window) then
    local held = redis.call('GET', key) or ''
    local holder, at = string.match(held, '^(%S+ %S+) (%d+)$')
    if holder ~= mine then
      if at and tonumber(now) - tonumber(at) < window then
        answer = held
      else
        local keep = math.max(window, redis.call('PTTL', key))
        redis.call('SET', key, mine .. ' ' .. now, 'PX', keep)
      end
    end
  end
  answers[n] = answer
end
return answers
