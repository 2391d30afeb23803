//! What the store's scripts answer: a status, then what it carries.

use std::collections::VecDeque;

use ::redis::Value;

use crate::durable::store::{Info, Mode, Payload, StoreError};
use crate::durable::Offset;

/// A script's answer: its status and the values after it, taken in order, and the sources
/// that the run's forks let go of.
pub(super) struct Reply {
    pub(super) status: String,
    rest: VecDeque<Value>,
    pub(super) unpins: Vec<String>,
}

impl Reply {
    /// `{answer, unpins}`, as every run answers.
    pub(super) fn parse(value: Value) -> Result<Self, StoreError> {
        let Value::Array(parts) = value else {
            return Err(corrupt("an answer that is not an array"));
        };
        let [answer, unpins]: [Value; 2] = parts
            .try_into()
            .map_err(|_| corrupt("an answer without its unpins"))?;
        let Value::Array(items) = answer else {
            return Err(corrupt("an answer that is not an array"));
        };
        let unpins = list(unpins)?
            .into_iter()
            .map(text)
            .collect::<Result<_, _>>()?;
        let mut rest = VecDeque::from(items);
        let status = rest.pop_front().map(text).transpose()?;
        let status = status.ok_or_else(|| corrupt("an empty answer"))?;
        Ok(Self {
            status,
            rest,
            unpins,
        })
    }

    /// The next value, text.
    pub(super) fn text(&mut self) -> Result<String, StoreError> {
        text(self.next()?)
    }

    /// The next value, a list of appends as the data list keeps them.
    pub(super) fn items(&mut self) -> Result<Vec<Vec<u8>>, StoreError> {
        let items = list(self.next()?)?.into_iter().map(|item| match item {
            Value::BulkString(bytes) => Ok(bytes),
            _ => Err(corrupt("an append that is not a string")),
        });
        items.collect()
    }

    fn next(&mut self) -> Result<Value, StoreError> {
        self.rest
            .pop_front()
            .ok_or_else(|| corrupt("an answer shorter than expected"))
    }

    /// The next value, an integer.
    pub(super) fn int(&mut self) -> Result<u64, StoreError> {
        match self.next()? {
            Value::Int(n) => u64::try_from(n).map_err(|_| corrupt("a negative number")),
            other => number(text(other)?),
        }
    }

    /// The next value, a number written as text (`""` for none: 0).
    pub(super) fn number(&mut self) -> Result<u64, StoreError> {
        number(text(self.next()?)?)
    }

    /// The next value, what is known about a stream.
    pub(super) fn info(&mut self) -> Result<Info, StoreError> {
        let Value::Array(fields) = self.next()? else {
            return Err(corrupt("stream information that is not an array"));
        };
        let mut fields = Self {
            status: String::new(),
            rest: VecDeque::from(fields),
            unpins: Vec::new(),
        };
        let epoch = fields.number()?;
        let content_type = text(fields.next()?)?;
        let tail = Offset::new(fields.int()?);
        let closed = text(fields.next()?)? == "1";
        let ttl = text(fields.next()?)?;
        let expires_at = text(fields.next()?)?;
        let mut info = Info::new(epoch, content_type, tail);
        info.closed = closed;
        info.ttl = match ttl.as_str() {
            "" => None,
            ttl => Some(number(ttl.to_owned())?),
        };
        info.expires_at = (!expires_at.is_empty()).then_some(expires_at);
        Ok(info)
    }

    /// The refusal that a status other than success names.
    pub(super) fn refusal(&mut self) -> StoreError {
        let status = std::mem::take(&mut self.status);
        let refusal = match status.as_str() {
            "nf" => StoreError::NotFound,
            "gone" => StoreError::Gone,
            "cfg" => StoreError::ConfigMismatch,
            "ctm" => StoreError::ContentTypeMismatch,
            "fnf" => StoreError::ForkSourceNotFound,
            "fgone" => StoreError::ForkSourceGone,
            "fbeyond" => StoreError::ForkOffsetBeyondTail,
            "badsub" => StoreError::InvalidSubOffset,
            "eszero" => StoreError::EpochSeqNotZero,
            "regr" => StoreError::SeqRegression,
            "closed" => match self.int() {
                Ok(tail) => StoreError::Closed {
                    tail: Offset::new(tail),
                },
                Err(err) => err,
            },
            "stale" => match self.number() {
                Ok(current) => StoreError::StaleEpoch { current },
                Err(err) => err,
            },
            "gap" => {
                // The producer's last sequence number ("" for a new producer), and the one
                // received.
                let last = self.next().and_then(text);
                match (last, self.number()) {
                    (Ok(last), Ok(received)) => StoreError::SeqGap {
                        expected: match last.as_str() {
                            "" => 0,
                            _ => number(last).map_or(0, |last| last.saturating_add(1)),
                        },
                        received,
                    },
                    (Err(err), _) | (_, Err(err)) => err,
                }
            }
            other => corrupt(&format!("the unknown status {other:?}")),
        };
        refusal
    }
}

/// A list (Lua's empty table reaches Redis as an empty array, or as nil).
fn list(value: Value) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(corrupt("a list that is not an array")),
    }
}

/// An append as the data list keeps it, back into a payload.
pub(super) fn decode(bytes: Vec<u8>, mode: Mode) -> Payload {
    if mode != Mode::Json {
        return Payload::Bytes(bytes.into());
    }
    let ends: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i)
        .collect();
    // Each value is followed by a newline that is not part of it.
    let mut text = Vec::with_capacity(bytes.len() - ends.len());
    let mut cut = Vec::with_capacity(ends.len());
    let mut start = 0;
    for end in ends {
        text.extend_from_slice(&bytes[start..end]);
        cut.push(text.len());
        start = end + 1;
    }
    Payload::json_block(text, cut)
}

fn text(value: Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|_| corrupt("text that is not UTF-8"))
        }
        Value::SimpleString(text) => Ok(text),
        Value::Int(n) => Ok(n.to_string()),
        _ => Err(corrupt("a value that is not text")),
    }
}

fn number(text: String) -> Result<u64, StoreError> {
    text.parse()
        .map_err(|_| corrupt(&format!("{text:?}, which is not a number")))
}

/// What Redis answered is not what the scripts answer: another program wrote the keys, or
/// they were changed by hand.
fn corrupt(what: &str) -> StoreError {
    tracing::error!("redis store: unexpected data in redis: {what}");
    StoreError::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_appends_come_back_value_by_value() {
        let payload = Payload::parse(Mode::Json, "[1, {\"a\":\n2}, \"x\\ny\"]".into(), false)
            .unwrap()
            .unwrap();
        let stored = super::super::encode(&payload);
        assert_eq!(stored.len(), payload.size());
        assert_eq!(decode(stored, Mode::Json), payload);
        let bytes = Payload::Bytes("a\nb".into());
        assert_eq!(decode(super::super::encode(&bytes), Mode::Text), bytes);
    }
}
