//! What the source keeps in Redis, the Lua scripts that read and write it, and the parsing of
//! Redis replies into events.
//!
//! Per topic there are two keys:
//!
//! - the stream `<prefix><topic>`, whose entries have ids `0-<seq>` (dense, from 1) and the
//!   fields `d` (the JSON data), `e` (the epoch, 16 hex digits), `t` (the publish time by Redis's
//!   clock, milliseconds since the Unix epoch) and, for named events, `n`;
//! - the epoch key `<prefix><topic>:epoch`, holding the epoch of the stream. While no stream
//!   exists it may hold `~<epoch>`: an epoch reserved by a reader, which the next publish adopts,
//!   so that cursors handed out for an empty topic stay valid after its first event.
//!
//! A publish that finds no stream under a live (unreserved) epoch starts a new epoch: the stream
//! was deleted, and its old cursors must be answered with a resync.

use redis::{Script, Value};

use super::Error;
use crate::source::{Batch, Outcome, Position};
use crate::{Cursor, Epoch, Event, EventData, EventName};

/// Shared by both scripts: the stream's epoch, creating or repairing the epoch key as needed.
/// `reserve` is true on the read path (an empty topic gets a reserved epoch), false on publish.
const EPOCH_OF: &str = r#"
local function epoch_of(stream, ekey, fresh, reserve)
  local exists = redis.call('EXISTS', stream) == 1
  local cur = redis.call('GET', ekey)
  if exists then
    if cur and string.sub(cur, 1, 1) == '~' then
      cur = string.sub(cur, 2)
      redis.call('SET', ekey, cur)
    elseif not cur then
      cur = fresh
      local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
      if last[1] then
        local fields = last[1][2]
        for i = 1, #fields, 2 do
          if fields[i] == 'e' then cur = fields[i + 1] end
        end
      end
      redis.call('SET', ekey, cur)
    end
    return cur, true
  end
  if cur and string.sub(cur, 1, 1) == '~' then
    cur = string.sub(cur, 2)
  else
    cur = fresh
  end
  if reserve then
    redis.call('SET', ekey, '~' .. cur)
  else
    redis.call('SET', ekey, cur)
  end
  return cur, false
end
"#;

/// KEYS: stream, epoch key. ARGV: fresh epoch, max length, data, and the event name if any.
/// Returns `{epoch, id}`.
const PUBLISH: &str = r#"
local epoch = epoch_of(KEYS[1], KEYS[2], ARGV[1], false)
local now = redis.call('TIME')
local t = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
local id
if ARGV[4] then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '0-*', 'd', ARGV[3], 'e', epoch, 't', t, 'n', ARGV[4])
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '0-*', 'd', ARGV[3], 'e', epoch, 't', t)
end
return {epoch, id}
"#;

/// KEYS: stream, epoch key. ARGV: fresh epoch, mode (`after`, `first` or `tail`), the id to read
/// after (mode `after`), the most entries to return. Returns `{epoch, first id or '', last
/// generated id, entries}`; `tail` entries are newest first.
const READ: &str = r#"
local epoch, exists = epoch_of(KEYS[1], KEYS[2], ARGV[1], true)
if not exists then return {epoch, '', '0-0', {}} end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last_id = '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last_id = info[i + 1] end
end
local entries
if ARGV[2] == 'tail' then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[4])
elseif ARGV[2] == 'first' then
  entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[4])
else
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[3], '+', 'COUNT', ARGV[4])
end
local first_id = ''
if first[1] then first_id = first[1][1] end
return {epoch, first_id, last_id, entries}
"#;

/// The two scripts, built once per source.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) read: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            publish: Script::new(&format!("{EPOCH_OF}{PUBLISH}")),
            read: Script::new(&format!("{EPOCH_OF}{READ}")),
        }
    }
}

/// What a read asks for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ReadMode {
    /// Entries after this sequence number, oldest first.
    After(u64),
    /// The oldest entries.
    First,
    /// The newest entries (returned newest first by Redis, oldest first by [`Snapshot`]).
    Tail,
}

/// An atomic view of one stream, as the read script returns it.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) epoch: Epoch,
    /// The sequence number of the oldest retained entry, if there is one.
    pub(crate) first: Option<u64>,
    /// The sequence number of the newest entry ever added (it may have been trimmed since).
    pub(crate) head: u64,
    /// Entries, oldest first.
    pub(crate) entries: Vec<Event>,
}

impl Snapshot {
    /// Parses the read script's reply.
    pub(crate) fn parse(value: Value, mode: ReadMode) -> Result<Self, Error> {
        let mut parts = array(value, "read reply")?.into_iter();
        let (Some(epoch), Some(first), Some(head), Some(entries), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Error::corrupt(
                "the read script answered in an unknown shape",
            ));
        };
        let epoch = parse_epoch(&text(epoch, "epoch")?)?;
        let first = text(first, "first id")?;
        let first = if first.is_empty() {
            None
        } else {
            Some(parse_id(&first)?)
        };
        let head = parse_id(&text(head, "last id")?)?;
        let mut entries = parse_entries(entries, epoch)?
            .into_iter()
            .map(|(event, _)| event)
            .collect::<Vec<_>>();
        if matches!(mode, ReadMode::Tail) {
            entries.reverse();
        }
        Ok(Self {
            epoch,
            first,
            head,
            entries,
        })
    }

    /// The cursor that reads every retained event.
    pub(crate) fn oldest(&self) -> Cursor {
        let seq = self
            .first
            .map_or(self.head, |first| first.saturating_sub(1));
        Cursor::new(self.epoch, seq.min(self.head))
    }

    /// Answers `position` from this view, or `None` if the subscription must wait for the next
    /// event.
    pub(crate) fn answer(&self, position: Position, limit: usize) -> Option<Outcome> {
        let head = Cursor::new(self.epoch, self.head);
        let oldest = self.oldest();
        let after = match crate::source::read_after(position, oldest, head) {
            Ok(after) => after,
            Err(outcome) => return Some(outcome),
        };
        let events: Vec<Event> = self
            .entries
            .iter()
            .filter(|event| event.id() > after)
            .take(limit)
            .cloned()
            .collect();
        match Batch::new(events) {
            Some(batch) => Some(Outcome::Events(batch)),
            None if matches!(position, Position::Oldest) => Some(Outcome::Head(head)),
            None => None,
        }
    }
}

/// Parses the reply of `XREAD ... STREAMS <one key> <id>`: `None` on a timeout.
///
/// Entries stamped with another epoch than `epoch` are returned with `false`.
pub(crate) fn parse_xread(value: Value, epoch: Epoch) -> Result<Vec<(Event, bool)>, Error> {
    let streams = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        other => array(other, "XREAD reply")?
            .into_iter()
            .map(|stream| {
                let mut pair = array(stream, "XREAD stream")?.into_iter();
                pair.nth(1)
                    .ok_or_else(|| Error::corrupt("XREAD stream without entries"))
            })
            .collect::<Result<Vec<_>, Error>>()?,
    };
    let mut events = Vec::new();
    for entries in streams {
        events.extend(parse_entries(entries, epoch)?);
    }
    Ok(events)
}

/// Parses stream entries `[[id, [field, value, ...]], ...]` into events, each with whether its
/// epoch field equals `epoch`.
fn parse_entries(value: Value, epoch: Epoch) -> Result<Vec<(Event, bool)>, Error> {
    array(value, "entries")?
        .into_iter()
        .map(|entry| {
            let mut entry = array(entry, "entry")?.into_iter();
            let (Some(id), Some(fields)) = (entry.next(), entry.next()) else {
                return Err(Error::corrupt("a stream entry without id or fields"));
            };
            let id = text(id, "entry id")?;
            let seq = parse_id(&id)?;
            let fields: Vec<Value> = match fields {
                Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                other => array(other, "entry fields")?,
            };
            let (mut data, mut name, mut stamped, mut published) = (None, None, None, None);
            let mut fields = fields.into_iter();
            while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
                match bytes(field, "field name")?.as_slice() {
                    b"d" => data = Some(bytes(value, "data")?),
                    b"n" => name = Some(text(value, "event name")?),
                    b"e" => stamped = Some(parse_epoch(&text(value, "entry epoch")?)?),
                    // The publish time by Redis's clock, in milliseconds since the Unix epoch;
                    // entries written before it was stamped have none.
                    b"t" => published = text(value, "publish time")?.parse::<u64>().ok(),
                    _ => {}
                }
            }
            let data = data.ok_or_else(|| Error::corrupt(format!("entry {id} has no data")))?;
            let data = EventData::from_json(data).map_err(|err| {
                Error::corrupt_with(format!("entry {id} does not hold valid JSON data"), err)
            })?;
            let stamped =
                stamped.ok_or_else(|| Error::corrupt(format!("entry {id} has no epoch")))?;
            let mut event = Event::new(Cursor::new(stamped, seq), data);
            if let Some(ms) = published {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                event = event.with_published_at(at);
            }
            if let Some(name) = name {
                let name = EventName::new(&name).map_err(|err| {
                    Error::corrupt_with(format!("entry {id} has an invalid event name"), err)
                })?;
                event = event.with_name(name);
            }
            Ok((event, stamped == epoch))
        })
        .collect()
}

/// The sequence number of a stream id `0-<seq>`.
pub(crate) fn parse_id(id: &str) -> Result<u64, Error> {
    id.strip_prefix("0-")
        .and_then(|seq| seq.parse().ok())
        .ok_or_else(|| {
            Error::corrupt(format!(
                "stream id {id:?} is not of the form 0-<seq> this source writes"
            ))
        })
}

/// An epoch as stored: exactly 16 lowercase hex digits.
pub(crate) fn parse_epoch(text: &str) -> Result<Epoch, Error> {
    let valid = text.len() == 16
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return Err(Error::corrupt(format!(
            "epoch {text:?} is not 16 lowercase hex digits"
        )));
    }
    u64::from_str_radix(text, 16)
        .map(Epoch::new)
        .map_err(|err| Error::corrupt_with(format!("epoch {text:?}"), err))
}

fn array(value: Value, what: &str) -> Result<Vec<Value>, Error> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::corrupt(format!(
            "expected an array for {what}, got {other:?}"
        ))),
    }
}

fn bytes(value: Value, what: &str) -> Result<Vec<u8>, Error> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(Error::corrupt(format!(
            "expected a string for {what}, got {other:?}"
        ))),
    }
}

fn text(value: Value, what: &str) -> Result<String, Error> {
    String::from_utf8(bytes(value, what)?)
        .map_err(|err| Error::corrupt_with(format!("{what} is not UTF-8"), err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ResyncReason;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(seq: u64, epoch: &str, data: &str) -> Value {
        Value::Array(vec![
            bulk(&format!("0-{seq}")),
            Value::Array(vec![bulk("d"), bulk(data), bulk("e"), bulk(epoch)]),
        ])
    }

    const E: &str = "00000000000000ff";

    #[test]
    fn ids_and_epochs_parse_strictly() {
        assert_eq!(parse_id("0-42").unwrap(), 42);
        assert!(parse_id("1700000000000-0").unwrap_err().is_corrupt());
        assert!(parse_id("0-x").is_err());
        assert_eq!(parse_epoch(E).unwrap(), Epoch::new(255));
        assert!(parse_epoch("ff").is_err());
        assert!(parse_epoch("00000000000000FF").is_err());
    }

    #[test]
    fn snapshots_answer_like_the_memory_log() {
        let reply = Value::Array(vec![
            bulk(E),
            bulk("0-3"),
            bulk("0-5"),
            Value::Array(vec![entry(4, E, "4"), entry(5, E, "5")]),
        ]);
        let snap = Snapshot::parse(reply, ReadMode::After(3)).unwrap();
        let epoch = Epoch::new(255);
        assert_eq!(snap.oldest(), Cursor::new(epoch, 2));
        let at = |seq| Position::After(Cursor::new(epoch, seq));
        match snap.answer(at(3), 10) {
            Some(Outcome::Events(batch)) => assert_eq!(batch.last().seq(), 5),
            other => panic!("{other:?}"),
        }
        assert_eq!(snap.answer(at(5), 10), None);
        assert!(matches!(
            snap.answer(at(1), 10),
            Some(Outcome::Resync(r)) if r.reason() == ResyncReason::Expired
        ));
        assert!(matches!(
            snap.answer(at(6), 10),
            Some(Outcome::Ahead { head }) if head.seq() == 5
        ));
        let other = Position::After(Cursor::new(Epoch::new(1), 5));
        assert!(matches!(
            snap.answer(other, 10),
            Some(Outcome::Resync(r)) if r.reason() == ResyncReason::EpochMismatch
        ));
    }

    #[test]
    fn foreign_entries_are_errors_not_panics() {
        let no_data = Value::Array(vec![Value::Array(vec![
            bulk("0-1"),
            Value::Array(vec![bulk("e"), bulk(E)]),
        ])]);
        assert!(parse_entries(no_data, Epoch::new(255))
            .unwrap_err()
            .is_corrupt());
        let bad_json = Value::Array(vec![entry(1, E, "{")]);
        assert!(parse_entries(bad_json, Epoch::new(255)).is_err());
        let other_epoch = Value::Array(vec![entry(1, "0000000000000001", "1")]);
        let parsed = parse_entries(other_epoch, Epoch::new(255)).unwrap();
        assert!(!parsed[0].1);
        assert!(Snapshot::parse(bulk("x"), ReadMode::Tail).is_err());
    }
}
