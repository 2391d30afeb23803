-- The operations that add no data (after the shared part): Redis runs them when it is out
-- of memory too (the script is flagged `allow-oom`), so that a full store stays readable and
-- deleting frees room.

-- read: ARGV[2] the offset to read after, or "" for the tail, [3] the most appends, [4] the
-- most bytes, [5] "1" to renew the TTL (a read; not for HEAD).
if op == 'read' then
  local m, err = live(base, now)
  if not m then return {err} end
  if ARGV[5] == '1' then touch(base, m, now) end
  local tail = num(m.tl)
  local from = tail
  if ARGV[2] ~= '' then from = tonumber(ARGV[2]) end
  if from > tail then return {'beyond'} end
  local b = {chunks = {}, bytes = 0, max = tonumber(ARGV[3]), max_bytes = tonumber(ARGV[4]),
             full = false}
  if b.max > 0 and from < tail then collect(base, m, from, tail, b) end
  return {'ok', info(m), from, b.chunks}
end

if op == 'delete' then
  local m, err = live(base, now)
  if not m then return {err} end
  remove(base, now)
  return {'ok'}
end

return redis.error_reply('unknown operation ' .. tostring(op))
