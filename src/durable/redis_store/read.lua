-- The operations that add no data (after the shared part): Redis runs them when it is out
-- of memory too (the script is flagged `allow-oom`), so that a full store stays readable and
-- deleting frees room.

-- read: ARGV[2] the offset to read after, or "" for the tail, [3] the most appends, [4] the
-- most bytes, [5] "1" to renew the TTL (a read; not for HEAD). Answers the stream's own
-- appends, and where those before them are (its source, up to which offset), if the read
-- starts before its fork offset.
if op == 'read' then
  local m, err = live(base, now)
  if not m then return finish({err}) end
  if ARGV[5] == '1' then touch(base, m, now) end
  local tail = num(m.tl)
  local from = tail
  if ARGV[2] ~= '' then from = tonumber(ARGV[2]) end
  if from > tail then return finish({'beyond'}) end
  local max = tonumber(ARGV[3])
  local chunks, source, upto = {}, '', 0
  if max > 0 and from < tail then
    chunks = own(base, m, from, tail, max, tonumber(ARGV[4]))
    source, upto = below(m, from, tail)
  end
  return finish({'ok', info(m), from, chunks, source, upto})
end

-- range: a fork's source's appends: ARGV[2] after, [3] at most at, [4] the most appends, [5]
-- the most bytes. The source is pinned while forks read from it, and what it holds up to a
-- fork offset never changes; its expiry is not checked (forks keep reading a retired source).
if op == 'range' then
  local m = meta(base)
  if not m then return finish({'gone'}) end
  local after, upto = tonumber(ARGV[2]), tonumber(ARGV[3])
  local chunks = own(base, m, after, upto, tonumber(ARGV[4]), tonumber(ARGV[5]))
  local source, below_upto = below(m, after, upto)
  return finish({'ok', chunks, source, below_upto})
end

if op == 'delete' then
  local m, err = live(base, now)
  if not m then return finish({err}) end
  remove(base)
  return finish({'ok'})
end

-- unpin: a fork let go of this stream: removed once no fork reads from it if it was deleted,
-- and set to expire again otherwise.
if op == 'unpin' then
  if redis.call('EXISTS', base .. ':m') == 1 then
    local refs = redis.call('HINCRBY', base .. ':m', 'rf', -1)
    if refs <= 0 then
      if redis.call('HEXISTS', base .. ':m', 'dl') == 1 then
        remove(base)
      else
        arm(base, now)
      end
    end
  end
  return finish({'ok'})
end

return redis.error_reply('unknown operation ' .. tostring(op))
