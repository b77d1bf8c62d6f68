-- watchdog_snapshot: one page of the tasks waiting on the worker queues or
-- delivered and unacknowledged (worker/background/watchdog.py, snapshot):
-- reads up to a page of kombu messages, the key given and on, and keeps only
-- the references of the jobs wanted, from the `argsrepr` header our tasks
-- carry (job_id=J, chunk=N), never a body.
--
-- KEYS[1]: the unacked hash
-- KEYS[2..n-1]: the queue lists (every priority step of every queue)
-- KEYS[n]: the unacked hash again
-- ARGV[1]: the key to read (1-based)
-- ARGV[2]: where in it: a list offset, or an HSCAN cursor
-- ARGV[3]: the page size (messages)
-- ARGV[4..]: the job ids wanted (none: every job)
-- Returns {key, where: the place to go on (key #KEYS + 1: done), references:
-- a flat list of "task:job id" and the list of its numbers (chunk, or first
-- chunk) found in the page, messages of our tasks whose argsrepr it could
-- not read (another client's), for parse_task}.
local key, at, page = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local wanted, every = {}, #ARGV == 3
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local kinds = {send_chunk = true, plan_job = true, cancel_job = true}
local groups, order, odd = {send_chunk = {}, plan_job = {}, cancel_job = {}}, {}, {}
local function look(raw)
  local _, stop = string.find(raw, '"task": "smsbulk.', 1, true)
  if not stop then return end
  local _, from = string.find(raw, '"argsrepr": "job_id=', stop, true)
  local task = string.match(raw, '^([%a_]+)"', stop + 1)
  if not (task and kinds[task]) then return end
  local job, number
  if from then
    job, number = string.match(raw, '^([^",]+), [%a_]+=(%d+)"', from + 1)
    if not job then
      job = string.match(raw, '^([^",]+)"', from + 1)
      number = job and 0
    end
  end
  if not job then odd[#odd + 1] = raw return end
  if not (every or wanted[job]) then return end
  local by_job = groups[task]
  local numbers = by_job[job]
  if not numbers then
    numbers = {}
    by_job[job] = numbers
    order[#order + 1] = task
    order[#order + 1] = job
  end
  numbers[#numbers + 1] = tonumber(number)
end
local seen = 0
while key <= #KEYS and seen < page do
  if key > 1 and key < #KEYS then
    local offset = tonumber(at)
    local raws = redis.call('LRANGE', KEYS[key], offset, offset + page - seen - 1)
    for _, raw in ipairs(raws) do look(raw) end
    seen = seen + #raws
    if seen < page then key, at = key + 1, '0' else at = tostring(offset + #raws) end
  else
    local scan = redis.call('HSCAN', KEYS[key], at, 'COUNT', page - seen)
    for i = 2, #scan[2], 2 do look(scan[2][i]) end
    seen = seen + #scan[2] / 2
    at = scan[1]
    if at == '0' then key = key + 1 end
  end
end
local references = {}
for i = 1, #order, 2 do
  references[#references + 1] = order[i] .. ':' .. order[i + 1]
  references[#references + 1] = groups[order[i]][order[i + 1]]
end
return {key, at, references, odd}
