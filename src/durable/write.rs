//! The writes: `PUT` creates a stream (or forks one), `POST` appends to it or closes it,
//! `DELETE` removes it. Each reads and checks the request's headers (and body), asks the store
//! once, and answers with what the store did.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::Body;

use super::answer::{empty, Answer, Error};
use super::headers::*;
use super::service::{Config, DurableStreams};
use super::store::{Append, Create, ExpiresAt, ForkFrom, Producer, Store};
use super::Offset;
use crate::{BoxError, PushBody};

/// What a `PUT` or a `POST` needs of the service while it reads its body and waits for the
/// store: the store and the settings, and not the live readers' layers (a request then takes
/// two shared counters, not the whole service's).
pub(super) struct Writes<St> {
    store: Arc<St>,
    config: Arc<Config>,
}

impl<St> DurableStreams<St> {
    /// What a write takes with it.
    pub(super) fn writes(&self) -> Writes<St> {
        Writes {
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

impl<St: Store> Writes<St> {
    /// The store key of a path.
    fn key<'a>(&self, path: &'a str) -> &'a str {
        self.config.prefix.key(path)
    }

    /// `PUT`: creates the stream (`201`, with `Location`), or confirms an identical one
    /// (`200`).
    pub(super) async fn create<B>(self, parts: Parts, body: B) -> Result<Response<PushBody>, Error>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let headers = &parts.headers;
        let mut create = Create::default();
        let content_type = text(headers, &CONTENT_TYPE).map_err(|()| Error::InvalidContentType)?;
        create.content_type = content_type
            .filter(|ct| valid_content_type(ct))
            .map(str::to_owned);
        let (Ok(ttl), Ok(expires_at)) = (
            text(headers, &STREAM_TTL),
            text(headers, &STREAM_EXPIRES_AT),
        ) else {
            return Err(Error::InvalidExpiry);
        };
        if ttl.is_some() && expires_at.is_some() {
            return Err(Error::TtlAndExpiresAt);
        }
        if let Some(ttl) = ttl {
            create.ttl = Some(integer(ttl).ok_or(Error::InvalidTtl)?);
        }
        if let Some(at) = expires_at {
            let unix_ms = super::time::parse_rfc3339(at).ok_or(Error::InvalidExpiresAt)?;
            create.expires_at = Some(ExpiresAt::new(at, unix_ms));
        }
        create.fork = self.fork(headers)?;
        create.closed = closed_header(headers);
        create.body = read_body(headers, body, self.config.max_body).await?;
        let path = parts.uri.path();
        let created = self.store.create(self.key(path), create).await?;
        let mut response = empty(match created.created {
            true => StatusCode::CREATED,
            false => StatusCode::OK,
        });
        let out = response.headers_mut();
        if let Ok(ct) = HeaderValue::try_from(&created.info.content_type) {
            out.insert(CONTENT_TYPE, ct);
        }
        out.insert(STREAM_NEXT_OFFSET, created.info.tail.to_header_value());
        if created.info.closed {
            set_true(out, STREAM_CLOSED);
        }
        if created.created {
            let host = text(headers, &HOST).ok().flatten();
            let authority = parts.uri.authority().map(|a| a.as_str()).or(host);
            if let Some(location) = authority
                .map(|host| format!("http://{host}{path}"))
                .and_then(|l| HeaderValue::try_from(l).ok())
            {
                out.insert(LOCATION, location);
            }
        }
        Ok(response)
    }

    /// The fork headers of a `PUT`: where the new stream starts in another, if anywhere.
    fn fork(&self, headers: &HeaderMap) -> Result<Option<ForkFrom>, Error> {
        let (Ok(source), Ok(fork_offset), Ok(sub_offset)) = (
            text(headers, &STREAM_FORKED_FROM),
            text(headers, &STREAM_FORK_OFFSET),
            text(headers, &STREAM_FORK_SUB_OFFSET),
        ) else {
            return Err(Error::InvalidFork);
        };
        let offset = fork_offset
            .map(str::parse::<Offset>)
            .transpose()
            .map_err(|_| Error::InvalidForkOffset)?;
        let sub_offset = match sub_offset {
            None => 0,
            Some(_) if source.is_none() => return Err(Error::SubOffsetWithoutFork),
            Some(text) => integer(text).ok_or(Error::InvalidForkSubOffset)?,
        };
        Ok(source.map(|source| {
            let mut fork = ForkFrom::new(self.key(source), offset);
            fork.sub_offset = sub_offset;
            fork
        }))
    }

    /// `POST`: appends the body, closes the stream, or both; `204`, or `200` for a producer's
    /// write that appended.
    pub(super) async fn append<B>(self, parts: Parts, body: B) -> Result<Response<PushBody>, Error>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let headers = &parts.headers;
        let producer = producer(headers, self.config.max_producer_id)?;
        let body = read_body(headers, body, self.config.max_body).await?;
        let close = closed_header(headers);
        let content_type = text(headers, &CONTENT_TYPE).ok().flatten();
        if body.is_empty() && !close {
            return Err(Error::EmptyBody);
        }
        if !body.is_empty() && content_type.is_none() {
            return Err(Error::MissingContentType);
        }
        let stream_seq = text(headers, &STREAM_SEQ).map_err(|()| Error::InvalidStreamSeq)?;
        let with_producer = producer.is_some();
        let append = Append {
            content_type: content_type.map(str::to_owned),
            body,
            close,
            stream_seq: stream_seq.map(str::to_owned),
            producer,
        };
        let appended = self.store.append(self.key(parts.uri.path()), append);
        let appended = appended.await?;
        let mut response = empty(match appended.wrote && with_producer {
            true => StatusCode::OK,
            false => StatusCode::NO_CONTENT,
        });
        let out = response.headers_mut();
        out.insert(STREAM_NEXT_OFFSET, appended.tail.to_header_value());
        if appended.closed {
            set_true(out, STREAM_CLOSED);
        }
        if let Some((epoch, seq)) = appended.producer {
            out.insert(PRODUCER_EPOCH, HeaderValue::from(epoch));
            out.insert(PRODUCER_SEQ, HeaderValue::from(seq));
        }
        Ok(response)
    }
}

impl<St: Store> DurableStreams<St> {
    /// `DELETE`: removes the stream (`204`).
    pub(super) fn delete(&self, parts: &Parts) -> Answer {
        let deleted = self.store.delete(self.key(parts.uri.path()));
        Box::pin(async move {
            deleted.await?;
            Ok(empty(StatusCode::NO_CONTENT))
        })
    }
}

/// Reads a whole body of at most `max` bytes.
async fn read_body<B>(headers: &HeaderMap, body: B, max: usize) -> Result<Bytes, Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(Error::BodyTooLarge { max });
    }
    let mut body = std::pin::pin!(body);
    // Storage of its own (a chunk of the body may share the connection's whole read buffer),
    // exactly the body's size when it says its length: one allocation and one copy. Not more
    // than 64 KiB up front, whatever the length claims, until the data comes.
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(64 << 10) as usize);
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|_| Error::BodyUnreadable)?;
        if let Ok(mut data) = frame.into_data() {
            if out.len() + data.remaining() > max {
                return Err(Error::BodyTooLarge { max });
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                out.extend_from_slice(chunk);
                let n = chunk.len();
                data.advance(n);
            }
        }
    }
    out.shrink_to_fit();
    Ok(Bytes::from(out))
}

/// A header's value as text, if present; `Err` for a value that is not visible ASCII.
fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ()> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| ()))
        .transpose()
}

/// A non-negative integer without sign, leading zeros or anything else.
fn integer(text: &str) -> Option<u64> {
    let plain = text == "0" || (!text.starts_with('0') && !text.is_empty());
    (plain && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Whether a content type has the shape `type/subtype`; anything else means the default.
fn valid_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
    };
    essence
        .split_once('/')
        .is_some_and(|(a, b)| token(a) && token(b))
}

/// `Stream-Closed: true` (case-insensitive); any other value is ignored.
fn closed_header(headers: &HeaderMap) -> bool {
    headers
        .get(STREAM_CLOSED)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// The producer headers: all three or none, an id that is not empty nor longer than `max_id`
/// bytes, and whole numbers up to 2^53 - 1.
fn producer(headers: &HeaderMap, max_id: usize) -> Result<Option<Producer>, Error> {
    let id = headers.get(PRODUCER_ID);
    let epoch = headers.get(PRODUCER_EPOCH);
    let seq = headers.get(PRODUCER_SEQ);
    let (id, epoch, seq) = match (id, epoch, seq) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
        _ => return Err(Error::PartialProducer),
    };
    let id = match id.to_str() {
        Ok(id) if !id.trim().is_empty() => id.to_owned(),
        _ => return Err(Error::InvalidProducerId),
    };
    if id.len() > max_id {
        return Err(Error::ProducerIdTooLong { max: max_id });
    }
    const MAX: u64 = (1 << 53) - 1;
    let number = |value: &HeaderValue| {
        let text = value.to_str().ok()?;
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| text.parse::<u64>().ok())
            .flatten()
            .filter(|n| *n <= MAX)
    };
    let (Some(epoch), Some(seq)) = (number(epoch), number(seq)) else {
        return Err(Error::InvalidProducerNumber);
    };
    Ok(Some(Producer { id, epoch, seq }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_plain() {
        for good in ["0", "1", "60", "99999"] {
            assert!(integer(good).is_some(), "{good}");
        }
        for bad in ["", "abc", "-1", "00060", "+60", "60.5", "1e3", "05"] {
            assert_eq!(integer(bad), None, "{bad}");
        }
    }

    #[test]
    fn producers_give_all_three_headers_or_none() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            map
        };
        assert_eq!(producer(&headers(&[]), 8), Ok(None));
        let all = [
            ("producer-id", "w"),
            ("producer-epoch", "1"),
            ("producer-seq", "2"),
        ];
        let expected = Producer {
            id: "w".into(),
            epoch: 1,
            seq: 2,
        };
        assert_eq!(producer(&headers(&all), 8), Ok(Some(expected)));
        assert_eq!(
            producer(&headers(&all[..2]), 8),
            Err(Error::PartialProducer)
        );
        assert_eq!(
            producer(&headers(&all), 0),
            Err(Error::ProducerIdTooLong { max: 0 })
        );
        let big = [
            ("producer-id", "w"),
            ("producer-epoch", "9007199254740992"),
            ("producer-seq", "0"),
        ];
        assert_eq!(
            producer(&headers(&big), 8),
            Err(Error::InvalidProducerNumber)
        );
    }
}
