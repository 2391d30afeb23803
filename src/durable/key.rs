//! Which stream a request names: its path without the service's prefix, the stream's key in the
//! store.

use std::fmt;
use std::sync::Arc;

/// The path prefix that the service removes from request paths and `Stream-Forked-From` values
/// where present; empty for none.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Prefix(Arc<str>);

impl Prefix {
    /// `prefix`, without trailing `/`.
    pub(crate) fn new(prefix: &str) -> Self {
        Self(Arc::from(prefix.trim_end_matches('/')))
    }

    /// The store key of `path`: the path without the prefix, if it has it.
    pub(crate) fn key<'a>(&self, path: &'a str) -> &'a str {
        let prefix = &*self.0;
        match path.strip_prefix(prefix) {
            Some(rest) if !prefix.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
            _ => path,
        }
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_paths_without_the_prefix_where_they_have_it() {
        let prefix = Prefix::new("/v1/stream/");
        assert_eq!(prefix.key("/v1/stream/a/b"), "/a/b");
        assert_eq!(prefix.key("/v1/stream"), "");
        assert_eq!(prefix.key("/v1/streams/a"), "/v1/streams/a");
        assert_eq!(prefix.key("/a"), "/a");
        assert_eq!(Prefix::default().key("/v1/stream/a"), "/v1/stream/a");
    }
}
