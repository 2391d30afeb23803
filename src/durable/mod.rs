//! The [Durable Streams](https://github.com/durable-streams/durable-streams) protocol, served on
//! the crate's pipeline (feature `durable`).
//!
//! Durable Streams is an HTTP protocol for append-only streams that clients read from any
//! offset and follow live: `PUT` creates a stream, `POST` appends (or closes it), `GET` reads
//! from `?offset=` (`-1` for the start, `now` for the tail) and follows with
//! `live=long-poll` or `live=sse`, `HEAD` tells the tail, `DELETE` removes it. Writers can be
//! idempotent (`Producer-Id`, `-Epoch`, `-Seq`), streams can expire (`Stream-TTL`,
//! `Stream-Expires-At`) and be forked at an offset.
//!
//! [`DurableStreams`] serves the whole protocol over a [`Store`] ([`MemoryStore`] is the
//! embedded one). It passes the official conformance suite (see the README). Its live modes are
//! the crate's layers with the protocol's formats ([`DurablePoll`], [`DurableSse`]) over the
//! store as an event source: a held long poll or an SSE stream costs what it costs there,
//! honours the same hold, heartbeats, lifetime, caps and shutdown signal, and carries the same
//! anti-buffering headers.
//!
//! # Offsets
//!
//! One append (one `POST`, or the initial body of a `PUT`) is one [`Offset`]: the offset after
//! the *k*-th append is `0000000000000000_<k as 16 digits>`. A forked stream shares its source's
//! offsets. Offsets sort as text.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto;
//! use hyper_util::service::TowerToHyperService;
//! use tower_push::durable::{DurableStreams, MemoryStore};
//! use tower_push::LongPollLayer;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let service = DurableStreams::builder(MemoryStore::new())
//!     .long_poll(LongPollLayer::builder().hold_timeout(Duration::from_secs(20)))
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4437").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     stream.set_nodelay(true)?;
//!     let service = TowerToHyperService::new(service.clone());
//!     tokio::spawn(async move {
//!         let builder = auto::Builder::new(TokioExecutor::new());
//!         let _ = builder.serve_connection(TokioIo::new(stream), service).await;
//!     });
//! }
//! # }
//! ```

mod answer;
#[cfg(feature = "durable-file")]
mod file;
mod format;
pub mod headers;
mod json_array;
mod key;
mod memory;
mod offset;
mod query;
mod read;
#[cfg(feature = "redis")]
mod redis_store;
mod service;
mod source;
mod state;
mod store;
mod time;
mod write;

#[cfg(feature = "durable-file")]
#[cfg_attr(docsrs, doc(cfg(feature = "durable-file")))]
pub use self::file::{FileStore, FileStoreBuilder, OpenError};
pub use self::format::{DurablePoll, DurableSse};
pub use self::memory::{MemoryStore, MemoryStoreBuilder};
pub use self::offset::{InvalidOffset, Offset};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis_store::{RedisStore, RedisStoreBuilder};
pub use self::service::{DurableStreams, DurableStreamsBuilder, ResponseFuture};
pub use self::store::{
    Append, Appended, Chunk, Create, Created, Doorbell, ExpiresAt, ForkFrom, Info, Mode, Payload,
    Producer, Read, Store, StoreError,
};
