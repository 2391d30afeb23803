-- The operations that add data (after the shared part): Redis refuses them at once, before
-- any change, when it is out of memory (the script is flagged without `allow-oom`).

-- create: ARGV[2] epoch, [3] "1" if a content type was given, [4] the content type, [5] its
-- media type, [6] "1" for JSON, [7] Stream-TTL or "", [8] Stream-Expires-At or "", [9] that in
-- unix milliseconds or "", [10] "1" for a fork, [11] its source's name, [12] its offset or ""
-- for the source's tail, [13] its sub-offset, [14] "1" if created closed, [15] "1" if there is
-- a body, [16] the body, [17] the media type the body was parsed for, [18] the code of the
-- body's problem or "". KEYS[2] is the fork's source's key base.
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

-- The first `n` bytes (or JSON values) of an append, or nil if it has fewer.
local function cut(item, n, json)
  if not json then
    if n <= #item then return string.sub(item, 1, n) end
    return nil
  end
  local at = 0
  for _ = 1, n do
    at = string.find(item, '\n', at + 1, true)
    if not at then return nil end
  end
  return string.sub(item, 1, at)
end

if op == 'create' then
  local m = meta(base)
  if m and not m.dl and expired(m, now) then
    remove(base, now)
    m = meta(base)
  end
  if m then
    if m.dl then return {'cfg'} end
    if same_config(m) then return {'exists', info(m)} end
    return {'cfg'}
  end
  local ct, mt, js = ARGV[4], ARGV[5], ARGV[6]
  local ttl, xt, xm = ARGV[7], ARGV[8], ARGV[9]
  local source_base, fields, appends, tail = nil, {}, {}, 0
  if ARGV[10] == '1' then
    source_base = KEYS[2]
    local s, err = live(source_base, now)
    if not s then
      if err == 'nf' then return {'fnf'} end
      return {'fgone'}
    end
    if ARGV[3] == '1' then
      if mt ~= s.mt then return {'ctm'} end
    else
      ct, mt, js = s.ct, s.mt, s.js or ''
      if ARGV[15] == '1' and ARGV[17] ~= s.mt then return {'ctm'} end
    end
    local offset = num(s.tl)
    if ARGV[12] ~= '' then offset = tonumber(ARGV[12]) end
    if offset > num(s.tl) then return {'fbeyond'} end
    if ttl == '' and xm == '' then
      ttl, xt, xm = s.ttl or '', s.xt or '', s.xm or ''
    end
    local sub = tonumber(ARGV[13])
    if sub > 0 then
      local anchor = {chunks = {}, bytes = 0, max = 1, max_bytes = math.huge, full = false}
      collect(source_base, s, offset, math.huge, anchor)
      local prefix = anchor.chunks[1] and cut(anchor.chunks[1], sub, js == '1')
      if not prefix then return {'badsub'} end
      appends[#appends + 1] = prefix
    end
    tail = offset
    for _, v in ipairs({'fk', source_base, 'fs', ARGV[11], 'fo', int(offset), 'fu', ARGV[13]}) do
      fields[#fields + 1] = v
    end
  end
  if ARGV[18] ~= '' then return {'bad', ARGV[18]} end
  if ARGV[15] == '1' then appends[#appends + 1] = ARGV[16] end
  redis.call('DEL', base .. ':d', base .. ':p')
  if #appends > 0 then redis.call('RPUSH', base .. ':d', unpack(appends)) end
  tail = tail + #appends
  for _, v in ipairs({'ep', ARGV[2], 'ct', ct, 'mt', mt, 'tl', int(tail), 'at', int(now)}) do
    fields[#fields + 1] = v
  end
  local optional = {js = js, ttl = ttl, xt = xt, xm = xm}
  if ARGV[14] == '1' then optional.cl = '1' end
  for field, value in pairs(optional) do
    if value ~= '' then
      fields[#fields + 1] = field
      fields[#fields + 1] = value
    end
  end
  redis.call('HSET', base .. ':m', unpack(fields))
  if source_base then
    redis.call('HINCRBY', source_base .. ':m', 'rf', 1)
    arm(source_base, now)
  end
  if ttl ~= '' or xm ~= '' then arm(base, now) end
  return {'created', info(meta(base))}
end

-- append: ARGV[2] "1" for a close without a body, [3] the request's media type, [4] "1" with
-- a producer, [5] its id, [6] its epoch, [7] its seq, [8] seq - 1 (each 20 digits; "" for seq
-- 0), [9] "1" with a Stream-Seq, [10] the Stream-Seq, [11] "1" to close, [12] the code of the
-- body's problem or "", [13] "1" with data, [14] the data.
if op == 'append' then
  local m, err = live(base, now)
  if not m then return {err} end
  touch(base, m, now)
  local close_only, producer = ARGV[2] == '1', ARGV[4] == '1'
  local id, epoch, seq, before = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  local by = nil
  if producer then by = id .. '\n' .. epoch .. '\n' .. seq end
  if m.cl then
    if (by and m.cb == by) or (not by and close_only) then return {'echo', num(m.tl)} end
    return {'closed', num(m.tl)}
  end
  if not close_only and ARGV[3] ~= m.mt then return {'ctm'} end
  if producer then
    local current = redis.call('HGET', base .. ':p', id)
    if not current then
      if before ~= '' then return {'gap', '', seq} end
    else
      local e, last = string.match(current, '^(%d+) (%d+)$')
      if cmp(epoch, e) < 0 then return {'stale', e} end
      if cmp(epoch, e) > 0 and before ~= '' then return {'eszero'} end
      if epoch == e and cmp(seq, last) <= 0 then return {'dup', num(m.tl), e, last} end
      if epoch == e and cmp(before, last) > 0 then return {'gap', last, seq} end
    end
  end
  if ARGV[9] == '1' and m.sq and cmp(ARGV[10], m.sq) <= 0 then return {'regr'} end
  if ARGV[12] ~= '' then return {'bad', ARGV[12]} end
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
  return {'ok', tail, ARGV[11] == '1' and 1 or 0}
end

return redis.error_reply('unknown operation ' .. tostring(op))
