//! The compression settings of the layers.

use crate::ConfigError;

/// A content coding the layers write.
///
/// Each needs its feature: `compression-gzip` for [`Gzip`](Coding::Gzip) and
/// [`Deflate`](Coding::Deflate), `compression-br` for [`Brotli`](Coding::Brotli),
/// `compression-zstd` for [`Zstd`](Coding::Zstd) (`compression-full` for all).
///
/// # Examples
///
/// ```
/// use tower_push::compression::Coding;
///
/// assert_eq!(Coding::Brotli.as_str(), "br");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Coding {
    /// `gzip` (RFC 1952): DEFLATE with a CRC-32. A stream keeps the last window of bytes it
    /// sent, and nothing else: about the window (1 KiB by default) between events.
    Gzip,
    /// `deflate` (RFC 1950): DEFLATE with an Adler-32, in the zlib format; kept as gzip is.
    Deflate,
    /// `br` (RFC 7932). A stream keeps a brotli encoder: about 308 KiB at the default level,
    /// whatever the window, so br is offered only when [named](Compression::codings).
    Brotli,
    /// `zstd` (RFC 8878). A stream keeps a zstd context sized for the window: about 33 KiB
    /// with a 1 KiB window, 56 KiB with 4 KiB, so zstd is offered only when
    /// [named](Compression::codings).
    Zstd,
}

impl Coding {
    /// Every coding, in the default order of preference: the least memory per stream first.
    pub(crate) const ALL: [Coding; 4] =
        [Coding::Gzip, Coding::Deflate, Coding::Zstd, Coding::Brotli];

    /// Whether [`Compression::new`] offers it: the codings that keep at most a few KiB per
    /// stream.
    fn offered_by_default(self) -> bool {
        matches!(self, Coding::Gzip | Coding::Deflate)
    }

    /// The coding's name in `Accept-Encoding` and `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// Whether this build of the crate writes the coding (its feature is on).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::compression::Coding;
    ///
    /// assert_eq!(Coding::Zstd.is_built(), cfg!(feature = "compression-zstd"));
    /// ```
    pub fn is_built(self) -> bool {
        match self {
            Coding::Gzip | Coding::Deflate => cfg!(feature = "compression-gzip"),
            Coding::Brotli => cfg!(feature = "compression-br"),
            Coding::Zstd => cfg!(feature = "compression-zstd"),
        }
    }

    /// The coding a token of `Accept-Encoding` names, ignoring case (`x-gzip` is `gzip`).
    pub(crate) fn from_token(token: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|coding| token.eq_ignore_ascii_case(coding.as_str()))
            .or_else(|| token.eq_ignore_ascii_case("x-gzip").then_some(Coding::Gzip))
    }
}

/// Reads a coding's name as `Content-Encoding` writes it (`gzip`, `deflate`, `br`, `zstd`,
/// ignoring case; `x-gzip` is `gzip`), for command lines and configuration files.
///
/// # Examples
///
/// ```
/// use tower_push::compression::Coding;
///
/// assert_eq!("br".parse(), Ok(Coding::Brotli));
/// assert!("compress".parse::<Coding>().is_err());
/// ```
impl std::str::FromStr for Coding {
    type Err = UnknownCoding;

    fn from_str(name: &str) -> Result<Self, UnknownCoding> {
        Self::from_token(name).ok_or_else(|| UnknownCoding(name.to_owned()))
    }
}

/// A name that is not a coding the crate writes; see [`Coding`]'s `FromStr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownCoding(String);

impl std::fmt::Display for UnknownCoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown content coding {:?}: expected gzip, deflate, br or zstd",
            self.0
        )
    }
}

impl std::error::Error for UnknownCoding {}

impl std::fmt::Display for Coding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How hard to compress: more CPU per message for fewer bytes.
///
/// Each coding maps it to its own scale; see [`Compression::level`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Level {
    /// The least CPU per message.
    Fastest,
    /// A level chosen for push: most of the ratio at a small fraction of the CPU of the best.
    #[default]
    Default,
    /// The coding's own level, on its own scale (gzip and deflate `0..=9`, br `0..=11`, zstd
    /// `1..=22`); clamped to the scale.
    Precise(u32),
}

/// Compression of a layer's answers: which codings, how hard, and with how much memory.
///
/// Given to [`LongPollBuilder::compression`](crate::LongPollBuilder::compression) or
/// [`ChunkedStreamBuilder::compression`](crate::ChunkedStreamBuilder::compression); see the
/// [module docs](super).
///
/// # Examples
///
/// ```
/// use tower_push::compression::{Coding, Compression, Level};
///
/// let compression = Compression::new()
///     .codings([Coding::Gzip])
///     .level(Level::Fastest)
///     .window(8 * 1024)
///     .min_size(256);
/// # let _ = compression;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compression {
    pub(crate) codings: Vec<Coding>,
    pub(crate) level: Level,
    pub(crate) window: usize,
    pub(crate) min_size: usize,
}

impl Compression {
    /// The smallest window, 1 KiB (zstd's smallest).
    pub const MIN_WINDOW: usize = 1024;
    /// The largest window, 32 KiB: the largest DEFLATE allows.
    pub const MAX_WINDOW: usize = 32 * 1024;

    /// gzip and deflate, in that order of preference, if this build writes them, at
    /// [`Level::Default`], with a 1 KiB window and a minimum size of 512 bytes. zstd and br
    /// are offered only when named: their compressors keep far more memory per stream (see
    /// [`Coding`]).
    pub fn new() -> Self {
        Self {
            codings: Coding::ALL
                .into_iter()
                .filter(|c| c.is_built() && c.offered_by_default())
                .collect(),
            level: Level::Default,
            window: 1024,
            min_size: 512,
        }
    }

    /// The codings to offer, in the server's order of preference, which decides between codings
    /// a request weighs alike (browsers send `gzip, deflate, br, zstd`, all alike).
    ///
    /// Default is gzip and deflate, if this build writes them.
    ///
    /// # Errors
    ///
    /// A coding whose feature is off makes `build` fail with
    /// [`ConfigError::CodingNotBuilt`].
    #[must_use]
    pub fn codings(mut self, codings: impl IntoIterator<Item = Coding>) -> Self {
        self.codings = codings.into_iter().collect();
        self
    }

    /// How hard to compress. Default is [`Level::Default`].
    #[must_use]
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// How far back, in bytes, a message may refer to earlier ones: a larger window finds more
    /// repetition and keeps more memory per stream. Rounded up to a power of two.
    ///
    /// Default is 1 KiB: on a feed of 300-byte JSON events, 4 KiB saved 4% more bytes for
    /// 23 KiB more per zstd stream and 40% more CPU per gzip event.
    ///
    /// # Errors
    ///
    /// A window outside [`MIN_WINDOW`](Self::MIN_WINDOW)`..=`[`MAX_WINDOW`](Self::MAX_WINDOW)
    /// makes `build` fail with [`ConfigError::CompressionWindow`].
    #[must_use]
    pub fn window(mut self, bytes: usize) -> Self {
        self.window = bytes;
        self
    }

    /// The smallest long-poll answer that is compressed, in bytes: below it, compression saves
    /// too little to pay for itself. A client that refuses identity (`identity;q=0`) gets every
    /// answer compressed. Streams are compressed from their first byte.
    ///
    /// Default is 512 bytes.
    #[must_use]
    pub fn min_size(mut self, bytes: usize) -> Self {
        self.min_size = bytes;
        self
    }

    /// Checks the settings, as the builders do.
    pub(crate) fn check(mut self) -> Result<Self, ConfigError> {
        if let Some(&coding) = self.codings.iter().find(|c| !c.is_built()) {
            return Err(ConfigError::CodingNotBuilt { coding });
        }
        if !(Self::MIN_WINDOW..=Self::MAX_WINDOW).contains(&self.window) {
            return Err(ConfigError::CompressionWindow { bytes: self.window });
        }
        self.window = self.window.next_power_of_two();
        let mut seen = Vec::with_capacity(self.codings.len());
        self.codings.retain(|c| {
            let first = !seen.contains(c);
            seen.push(*c);
            first
        });
        Ok(self)
    }

    /// The base-2 logarithm of the window.
    pub(crate) fn window_log(&self) -> u8 {
        self.window.trailing_zeros() as u8
    }
}

impl Default for Compression {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_codings() {
        assert_eq!(Coding::from_token("GZip"), Some(Coding::Gzip));
        assert_eq!(Coding::from_token("x-gzip"), Some(Coding::Gzip));
        assert_eq!(Coding::from_token("zstd"), Some(Coding::Zstd));
        assert_eq!(Coding::from_token("compress"), None);
        for coding in Coding::ALL {
            assert_eq!(Coding::from_token(coding.as_str()), Some(coding));
        }
    }

    #[test]
    fn settings_are_checked() {
        let err = Compression::new().window(100).check().unwrap_err();
        assert_eq!(err, ConfigError::CompressionWindow { bytes: 100 });
        let err = Compression::new().window(64 * 1024).check().unwrap_err();
        assert!(err.to_string().contains("32768"), "{err}");
        let checked = Compression::new().window(3000).check().unwrap();
        assert_eq!((checked.window, checked.window_log()), (4096, 12));
        for coding in Coding::ALL.into_iter().filter(|c| !c.is_built()) {
            let err = Compression::new().codings([coding]).check().unwrap_err();
            assert_eq!(err, ConfigError::CodingNotBuilt { coding });
        }
    }

    #[test]
    fn codings_named_twice_are_offered_once() {
        let built: Vec<_> = Coding::ALL.into_iter().filter(|c| c.is_built()).collect();
        let offered = Compression::new().codings;
        assert!(!offered.contains(&Coding::Brotli) && !offered.contains(&Coding::Zstd));
        let twice = built.iter().chain(&built).copied();
        let checked = Compression::new().codings(twice).check().unwrap();
        assert_eq!(checked.codings, built);
    }
}
