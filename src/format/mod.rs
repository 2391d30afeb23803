//! Wire formats: how answers are written on the wire.
//!
//! The layers decide *what* to answer (events, an empty hold, a rejection); a format decides how
//! it looks. [`PollFormat`] is the contract for long-poll answers and [`JsonFormat`] its default
//! implementation. The layers add the anti-buffering headers (see [`crate::headers`]) to every
//! response afterwards, so a format need not and cannot leave them out.

mod json;

pub use self::json::JsonFormat;

use http::Response;

use crate::source::Batch;
use crate::{Cursor, PushBody, Rejection};

/// How a long-poll layer writes its answers.
///
/// # Examples
///
/// A format that answers an empty hold with `200` and an empty list instead of `204`, for
/// clients that cannot handle `204`:
///
/// ```
/// use http::Response;
/// use tower_push::format::{JsonFormat, PollFormat};
/// use tower_push::source::Batch;
/// use tower_push::{Cursor, LongPollLayer, PushBody};
///
/// #[derive(Clone, Debug)]
/// struct AlwaysOk;
///
/// impl PollFormat for AlwaysOk {
///     fn events(&self, batch: &Batch) -> Response<PushBody> {
///         JsonFormat.events(batch)
///     }
///
///     fn timeout(&self, cursor: Cursor) -> Response<PushBody> {
///         Response::new(PushBody::full(format!(r#"{{"events":[],"cursor":"{cursor}"}}"#)))
///     }
/// }
///
/// let layer = LongPollLayer::builder().format(AlwaysOk).build()?;
/// # let _ = layer;
/// # Ok::<(), tower_push::ConfigError>(())
/// ```
pub trait PollFormat: Clone + Send + Sync + 'static {
    /// The answer carrying `batch`, the events after the request's cursor.
    fn events(&self, batch: &Batch) -> Response<PushBody>;

    /// The answer when the hold expired without events; `cursor` is where the client stands.
    fn timeout(&self, cursor: Cursor) -> Response<PushBody>;

    /// The answer to a request that gets an error status.
    ///
    /// The default writes [`Rejection::to_json_response`].
    fn rejection(&self, rejection: &Rejection) -> Response<PushBody> {
        rejection.to_json_response()
    }
}
