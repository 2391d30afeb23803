-- The Durable Streams store in Redis: the part both of its scripts share. Every operation on
-- a stream is one run of a script, so each is atomic on the server, whichever process sent it.
-- A run touches the keys of one stream only (one hash slot, so that it runs on Redis Cluster
-- too); what a fork needs of its source is a run on the source: its appends up to the fork
-- offset (which never change), and a pin (`rf`) that keeps the source's keys while the fork
-- reads from it.
--
-- KEYS[1] is the stream's key base, `<prefix>{<name>}`; ARGV[1] names the operation. Every
-- run answers `{answer, unpins}`: the sources that forks let go of, which the caller unpins
-- (an `unpin` run on each), in order. A stream is three keys with that base, in one hash
-- slot:
--   <base>:m  a hash of what is known about it (FIELDS below);
--   <base>:d  a list of its own appends, oldest first: the one at offset `fo + i` is item i - 1,
--             the bytes of a text or binary append, or the JSON values of a JSON append, each
--             followed by "\n" (values are one line of text);
--   <base>:p  a hash of its producers: id -> "<epoch> <seq>", each 20 decimal digits.
-- Every change a reader can see is published on the channel `<base>`.

-- ep: epoch (a number chosen at creation), ct: content type, mt: its media type, js: "1" for
-- a JSON stream, ttl: Stream-TTL in seconds, xt and xm: Stream-Expires-At as given and in unix
-- milliseconds, at: last access in unix milliseconds, fk/fs/fo/fu: a fork's source's key base,
-- name, offset and sub-offset, tl: tail, cl: "1" when closed, cb: the producer that closed it,
-- sq: the last Stream-Seq, rf: how many forks read from it, dl: "1" when deleted while forks
-- read from it.
local FIELDS = {'ep', 'ct', 'mt', 'js', 'ttl', 'xt', 'xm', 'at', 'fk', 'fs', 'fo', 'fu',
                'tl', 'cl', 'cb', 'sq', 'rf', 'dl'}
local SUFFIXES = {':m', ':d', ':p'}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format('%d', n)
end

local function num(s)
  return tonumber(s or '0')
end

-- Byte-wise comparison (Lua's own compares with the server's locale): -1, 0 or 1.
local function cmp(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      if x < y then return -1 else return 1 end
    end
  end
  if #a == #b then return 0 elseif #a < #b then return -1 else return 1 end
end

local function meta(base)
  local values = redis.call('HMGET', base .. ':m', unpack(FIELDS))
  if not values[1] then return nil end
  local m = {}
  for i, field in ipairs(FIELDS) do
    if values[i] then m[field] = values[i] end
  end
  return m
end

local function expired(m, now)
  if m.ttl and num(m.at) + num(m.ttl) * 1000 <= now then return true end
  if m.xm and now >= num(m.xm) then return true end
  return false
end

-- Lets Redis reclaim the stream's keys a second after it expires, unless forks read from it.
local function arm(base, now)
  local m = meta(base)
  if not m then return end
  local left
  if num(m.rf) <= 0 and not m.dl then
    if m.ttl then left = num(m.at) + num(m.ttl) * 1000 - now end
    if m.xm then
      local by_time = num(m.xm) - now
      if not left or by_time < left then left = by_time end
    end
  end
  for _, suffix in ipairs(SUFFIXES) do
    if left and left < 1e15 then
      redis.call('PEXPIRE', base .. suffix, int(math.max(left, 0) + 1000))
    else
      redis.call('PERSIST', base .. suffix)
    end
  end
end

-- The sources this run's forks let go of.
local UNPINS = {}

local function finish(answer)
  return {answer, UNPINS}
end

-- Deletes the stream at `base`: retires it while forks read from it; otherwise removes its
-- keys and lets go of its source (which the caller unpins).
local function remove(base)
  local m = meta(base)
  if not m then return end
  redis.call('PUBLISH', base, 'x')
  if num(m.rf) > 0 then
    redis.call('HSET', base .. ':m', 'dl', '1')
    return
  end
  redis.call('DEL', base .. ':m', base .. ':d', base .. ':p')
  if m.fk then UNPINS[#UNPINS + 1] = m.fk end
end

-- The stream at `base`, expired first if its time is up; or why there is none.
local function live(base, now)
  local m = meta(base)
  if not m then return nil, 'nf' end
  if not m.dl and expired(m, now) then
    remove(base)
    m = meta(base)
    if not m then return nil, 'nf' end
  end
  if m.dl then return nil, 'gone' end
  return m
end

-- Renews the stream's TTL: it was used now.
local function touch(base, m, now)
  if m.ttl then
    redis.call('HSET', base .. ':m', 'at', int(now))
    m.at = int(now)
    arm(base, now)
  end
end

-- The stream's own appends after offset `after` and at most at `upto`, oldest first, as many
-- as the budget takes: at most `max`, of at most `max_bytes` together unless the first alone
-- is larger. (Those at or before the fork offset are its source's.)
local function own(base, m, after, upto, max, max_bytes)
  local chunks, bytes = {}, 0
  local fo = num(m.fo)
  local last = math.min(upto, num(m.tl))
  local next = math.max(after, fo) + 1
  while next <= last do
    local want = math.min(last - next + 1, max - #chunks, 256)
    if want <= 0 then return chunks end
    local index = next - fo - 1
    local items = redis.call('LRANGE', base .. ':d', index, index + want - 1)
    if #items == 0 then return chunks end
    for _, item in ipairs(items) do
      if #chunks > 0 and bytes + #item > max_bytes then return chunks end
      bytes = bytes + #item
      chunks[#chunks + 1] = item
    end
    next = next + #items
  end
  return chunks
end

-- Where the appends at or before `upto` and after `after` that are not the stream's own are:
-- its source, up to which offset; or none.
local function below(m, after, upto)
  local fo = num(m.fo)
  if m.fk and after < fo then return m.fk, math.min(upto, fo) end
  return '', 0
end

local function info(m)
  return {m.ep, m.ct, num(m.tl), m.cl or '', m.ttl or '', m.xt or ''}
end

local op, base, now = ARGV[1], KEYS[1], now_ms()
