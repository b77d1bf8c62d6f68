-- rate_factor: an include (--#include rate_factor) defining
--   recovered_factor(factor, throttled_at, now, step, growth): an account's
--   effective share of its configured rates now, the stored `factor` as of
--   its last 429 (`throttled_at`) grown by `growth` for each whole `step`
--   seconds since, at most 1. The recovery is computed lazily, here, by
--   every script that reads the factor.
local function recovered_factor(factor, throttled_at, now, step, growth)
  if factor < 1 then
    local steps = math.floor((now - throttled_at) / step)
    if steps > 0 then factor = math.min(1, factor * growth ^ steps) end
  end
  return factor
end
