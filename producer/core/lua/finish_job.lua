-- finish_job: end the job if every recipient is final (finish_if_final), for
-- a caller that wrote nothing (worker/store.py: ResultsStore.finish_if_final
-- and, for the watchdog, finish_if_final).
--
-- KEYS[1]: the job hash
-- KEYS[2]: the finished set
-- KEYS[3]: the active set
-- ARGV[1]: now (epoch s)
-- ARGV[2]: the job id
-- Returns 1 if it ended the job (completed it, or settled its cancel), else 0.
--#include finish_if_final
if finish_if_final(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]) then return 1 end
return 0
