-- The operations that add data (after the shared part): Redis refuses them at once, before
-- any change, when it is out of memory (the script is flagged without `allow-oom`).

-- create: ARGV[2] epoch, [3] "1" if a content type was given, [4] the content type (the
-- source's for a fork without one), [5] its media type, [6] "1" for JSON, [7] Stream-TTL or
-- "", [8] Stream-Expires-At or "", [9] that in unix milliseconds or "" (a fork's: inherited
-- where it has none), [10] "1" for a fork, [11] its source's name, [12] its offset as asked,
-- or "" for the source's tail, [13] its sub-offset, [14] "1" if created closed, [15] "1" if
-- there is a body, [16] the body, [17] the code of the body's problem or "", [18] "1" only to
-- look whether the stream is there, [19] the source's key base, [20] the fork offset, [21] the
-- prefix that the sub-offset cuts from the source, or "". A fork's source is pinned first
-- (`pin`), and unpinned by the caller if this does not create the fork.
local function same_config(m)
  local content_type
  if ARGV[3] == '1' then
    content_type = ARGV[5] == m.mt
  elseif ARGV[10] == '1' then
    content_type = true
  else
    content_type = m.mt == 'application/octet-stream'
  end
  local fork
  if ARGV[10] ~= '1' then
    fork = m.fs == nil
  else
    fork = m.fs == ARGV[11] and (ARGV[12] == '' or tonumber(ARGV[12]) == num(m.fo))
      and ARGV[13] == (m.fu or '0')
  end
  local expiry
  if ARGV[10] == '1' and ARGV[7] == '' and ARGV[9] == '' then
    -- A fork without expiry of its own inherits the source's.
    expiry = true
  else
    expiry = ARGV[7] == (m.ttl or '') and ARGV[9] == (m.xm or '')
  end
  return content_type and fork and expiry and (ARGV[14] == '1') == (m.cl == '1')
end

if op == 'create' then
  local m = meta(base)
  if m and not m.dl and expired(m, now) then
    remove(base)
    m = meta(base)
  end
  if m then
    if m.dl then return finish({'cfg'}) end
    if same_config(m) then return finish({'exists', info(m)}) end
    return finish({'cfg'})
  end
  if ARGV[18] == '1' then return finish({'absent'}) end
  if ARGV[17] ~= '' then return finish({'bad'}) end
  local fields, appends, tail = {}, {}, 0
  if ARGV[10] == '1' then
    tail = tonumber(ARGV[20])
    for _, v in ipairs({'fk', ARGV[19], 'fs', ARGV[11], 'fo', int(tail), 'fu', ARGV[13]}) do
      fields[#fields + 1] = v
    end
    if ARGV[21] ~= '' then appends[#appends + 1] = ARGV[21] end
  end
  if ARGV[15] == '1' then appends[#appends + 1] = ARGV[16] end
  redis.call('DEL', base .. ':d', base .. ':p')
  if #appends > 0 then redis.call('RPUSH', base .. ':d', unpack(appends)) end
  tail = tail + #appends
  for _, v in ipairs({'ep', ARGV[2], 'ct', ARGV[4], 'mt', ARGV[5], 'tl', int(tail),
                      'at', int(now)}) do
    fields[#fields + 1] = v
  end
  local optional = {js = ARGV[6] == '1' and '1' or '', ttl = ARGV[7], xt = ARGV[8], xm = ARGV[9]}
  if ARGV[14] == '1' then optional.cl = '1' end
  for field, value in pairs(optional) do
    if value ~= '' then
      fields[#fields + 1] = field
      fields[#fields + 1] = value
    end
  end
  redis.call('HSET', base .. ':m', unpack(fields))
  if ARGV[7] ~= '' or ARGV[9] ~= '' then arm(base, now) end
  return finish({'created', info(meta(base))})
end

-- pin: a fork is about to read from this stream: ARGV[2] "1" if the fork's content type was
-- given, [3] its media type, [4] the fork offset, or "" for the tail. Answers what the fork
-- inherits and the offset, after the checks of the source, and keeps the stream's keys (no
-- expiry, a delete only retires it) until the fork lets go (`unpin`).
if op == 'pin' then
  local s, err = live(base, now)
  if not s then
    if err == 'nf' then return finish({'fnf'}) end
    return finish({'fgone'})
  end
  if ARGV[2] == '1' and ARGV[3] ~= s.mt then return finish({'ctm'}) end
  local offset = num(s.tl)
  if ARGV[4] ~= '' then offset = tonumber(ARGV[4]) end
  if offset > num(s.tl) then return finish({'fbeyond'}) end
  redis.call('HINCRBY', base .. ':m', 'rf', 1)
  arm(base, now)
  return finish({'ok', s.ct, s.mt, s.js or '', s.ttl or '', s.xt or '', s.xm or '', offset})
end

-- append: ARGV[2] "1" for a close without a body, [3] the request's media type, [4] "1" with
-- a producer, [5] its id, [6] its epoch, [7] its seq, [8] seq - 1 (each 20 digits; "" for seq
-- 0), [9] "1" with a Stream-Seq, [10] the Stream-Seq, [11] "1" to close, [12] the code of the
-- body's problem or "", [13] "1" with data, [14] the data.
if op == 'append' then
  local m, err = live(base, now)
  if not m then return finish({err}) end
  touch(base, m, now)
  local close_only, producer = ARGV[2] == '1', ARGV[4] == '1'
  local id, epoch, seq, before = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  local by = nil
  if producer then by = id .. '\n' .. epoch .. '\n' .. seq end
  if m.cl then
    if (by and m.cb == by) or (not by and close_only) then
      return finish({'echo', num(m.tl)})
    end
    return finish({'closed', num(m.tl)})
  end
  if not close_only and ARGV[3] ~= m.mt then return finish({'ctm'}) end
  if producer then
    local current = redis.call('HGET', base .. ':p', id)
    if not current then
      if before ~= '' then return finish({'gap', '', seq}) end
    else
      local e, last = string.match(current, '^(%d+) (%d+)$')
      if cmp(epoch, e) < 0 then return finish({'stale', e}) end
      if cmp(epoch, e) > 0 and before ~= '' then return finish({'eszero'}) end
      if epoch == e and cmp(seq, last) <= 0 then return finish({'dup', num(m.tl), e, last}) end
      if epoch == e and cmp(before, last) > 0 then return finish({'gap', last, seq}) end
    end
  end
  if ARGV[9] == '1' and m.sq and cmp(ARGV[10], m.sq) <= 0 then return finish({'regr'}) end
  if ARGV[12] ~= '' then return finish({'bad'}) end
  local tail, fields = num(m.tl), {}
  if ARGV[13] == '1' then
    redis.call('RPUSH', base .. ':d', ARGV[14])
    tail = tail + 1
    fields = {'tl', int(tail)}
  end
  if ARGV[9] == '1' then
    fields[#fields + 1] = 'sq'
    fields[#fields + 1] = ARGV[10]
  end
  if ARGV[11] == '1' then
    fields[#fields + 1] = 'cl'
    fields[#fields + 1] = '1'
    if by then
      fields[#fields + 1] = 'cb'
      fields[#fields + 1] = by
    end
  end
  if #fields > 0 then redis.call('HSET', base .. ':m', unpack(fields)) end
  if producer then redis.call('HSET', base .. ':p', id, epoch .. ' ' .. seq) end
  if m.ttl or m.xm then arm(base, now) end
  redis.call('PUBLISH', base, int(tail))
  return finish({'ok', tail, ARGV[11] == '1' and 1 or 0})
end

return redis.error_reply('unknown operation ' .. tostring(op))
