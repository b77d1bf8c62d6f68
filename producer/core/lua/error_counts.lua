-- error_counts: the errors among a few blocks of a job's outcomes, grouped
-- by error code and status (producer/monitoring.py, job_errors), counted
-- here so that only the groups cross the network, never the outcomes. An
-- error is a final outcome other than accepted with an error code or text;
-- an outcome's status code is its 3rd character, so only errors are decoded.
--
-- KEYS[1..]: the outcome hashes of the blocks to read
-- Returns a flat list: error code ('' for none), status code, count, and the
-- error text of one of them ('' for none), for each group.
local final = {}
for _, code in ipairs(FINAL_CODES) do final[code] = true end
final['a'] = nil
local groups, order = {}, {}
for _, key in ipairs(KEYS) do
  for _, value in ipairs(redis.call('HVALS', key)) do
    local status = string.sub(value, 3, 3)
    if final[status] then
      -- The error code and text are an outcome's 7th and 8th fields
      -- (producer/core/store.py, StoredOutcome); trailing nulls are dropped.
      local outcome = cjson.decode(value)
      local code, text = outcome[7], outcome[8]
      if type(code) ~= 'string' then code = '' end
      if type(text) ~= 'string' then text = '' end
      if code ~= '' or text ~= '' then
        local group = code .. '\t' .. status
        if not groups[group] then
          groups[group] = {code, status, 0, text}
          order[#order + 1] = group
        end
        groups[group][3] = groups[group][3] + 1
      end
    end
  end
end
local reply = {}
for _, group in ipairs(order) do
  for _, item in ipairs(groups[group]) do reply[#reply + 1] = item end
end
return reply
