//! The compressor of one answer: each coding's, behind one type.

use bytes::Bytes;

use super::{Coding, Compression, Level};

/// The compressor of one answer or stream.
///
/// [`encode`](Self::encode) compresses what it is given and flushes it: the client decodes
/// everything given so far from the bytes returned so far. Between calls it keeps at most about
/// the [window](Compression::window) of memory (see each coding's notes); it frees everything
/// when the coded stream ends.
pub(crate) struct Encoder {
    inner: Inner,
}

enum Inner {
    #[cfg(feature = "compression-gzip")]
    Deflate(Box<deflate::Stream>),
    #[cfg(feature = "compression-br")]
    Brotli(Box<brotli::Stream>),
    #[cfg(feature = "compression-zstd")]
    Zstd(Box<zstd::Stream>),
    /// The coded stream has ended.
    Ended,
}

// Without a coding, nothing makes an encoder: its methods have nothing to do.
#[cfg_attr(
    not(any(
        feature = "compression-gzip",
        feature = "compression-br",
        feature = "compression-zstd"
    )),
    allow(unreachable_code, unused_variables, unused_mut)
)]
impl Encoder {
    /// A compressor for `coding` with `settings`, which allocates only when it is first given
    /// bytes.
    ///
    /// # Panics
    ///
    /// Panics for a coding this build leaves out; the builders refuse to offer one.
    pub(crate) fn new(coding: Coding, settings: &Compression) -> Self {
        let level = settings.level;
        let window_log = settings.window_log();
        let inner = match coding {
            #[cfg(feature = "compression-gzip")]
            Coding::Gzip | Coding::Deflate => Inner::Deflate(Box::new(deflate::Stream::new(
                coding == Coding::Gzip,
                level,
                window_log,
            ))),
            #[cfg(feature = "compression-br")]
            Coding::Brotli => Inner::Brotli(Box::new(brotli::Stream::new(level, window_log))),
            #[cfg(feature = "compression-zstd")]
            Coding::Zstd => Inner::Zstd(Box::new(zstd::Stream::new(level, window_log))),
            #[allow(unreachable_patterns)]
            _ => unreachable!("compression coding {coding} is not built"),
        };
        Self { inner }
    }

    /// Compresses `input` and flushes it; with `last`, ends the coded stream (its final block
    /// and checksum) and frees the compressor. Empty after the end.
    pub(crate) fn encode(&mut self, input: &[u8], last: bool) -> Bytes {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        match &mut self.inner {
            #[cfg(feature = "compression-gzip")]
            Inner::Deflate(stream) => stream.encode(input, last, &mut out),
            #[cfg(feature = "compression-br")]
            Inner::Brotli(stream) => stream.encode(input, last, &mut out),
            #[cfg(feature = "compression-zstd")]
            Inner::Zstd(stream) => stream.encode(input, last, &mut out),
            Inner::Ended => {}
        }
        if last {
            self.inner = Inner::Ended;
        }
        Bytes::from(out)
    }
}

/// A coding's own number for `level`, on its scale `min..=max`, with `fastest` and `default`
/// its choices for push.
#[allow(dead_code)]
fn scale(level: Level, [min, fastest, default, max]: [i32; 4]) -> i32 {
    match level {
        Level::Fastest => fastest,
        Level::Default => default,
        Level::Precise(level) => i32::try_from(level).unwrap_or(max).clamp(min, max),
    }
}

/// gzip and deflate, with zlib-rs.
///
/// A DEFLATE compressor's tables take about 260 KiB whatever its window (zlib-rs's hash table
/// alone is 128 KiB), too much to keep for each of thousands of streams. So a stream keeps only
/// the last window of bytes it sent, which its client's decoder holds as well, and each frame
/// is compressed by the thread's compressor primed with them as its dictionary: the frame's
/// blocks may refer back into what the client already has, and end with a sync flush, on a byte
/// boundary, where the next frame's blocks continue the client's DEFLATE stream.
#[cfg(feature = "compression-gzip")]
mod deflate {
    use std::cell::RefCell;

    use zlib_rs::{Deflate, DeflateFlush, Status};

    use super::Level;

    /// gzip's header: no name, no time, no extra fields; "unknown" operating system.
    const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    /// zlib's header: DEFLATE with a 32 KiB window, default level, no dictionary.
    const ZLIB_HEADER: [u8; 2] = [0x78, 0x9c];
    /// A final empty block with fixed codes: the end of the DEFLATE stream.
    const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

    thread_local! {
        /// The thread's compressor and its level.
        static COMPRESSOR: RefCell<Option<(i32, Deflate)>> = const { RefCell::new(None) };
    }

    pub(super) struct Stream {
        /// gzip (a CRC-32 and the length) or zlib (an Adler-32).
        gzip: bool,
        level: i32,
        window: usize,
        /// The last `window` bytes sent (fewer at first).
        history: Vec<u8>,
        checksum: u32,
        /// The length sent, modulo 2^32 as gzip keeps it.
        len: u32,
        started: bool,
    }

    impl Stream {
        pub(super) fn new(gzip: bool, level: Level, window_log: u8) -> Self {
            Self {
                gzip,
                // Level 1 (zlib-rs's quick strategy) against 6, on 300-byte JSON events with a
                // 1 KiB window: 7% more bytes for 37% less CPU per frame.
                level: super::scale(level, [0, 1, 1, 9]),
                window: 1 << window_log,
                history: Vec::new(),
                checksum: if gzip { 0 } else { 1 },
                len: 0,
                started: false,
            }
        }

        pub(super) fn encode(&mut self, input: &[u8], last: bool, out: &mut Vec<u8>) {
            if !std::mem::replace(&mut self.started, true) {
                out.extend_from_slice(if self.gzip {
                    &GZIP_HEADER
                } else {
                    &ZLIB_HEADER
                });
            }
            if !input.is_empty() {
                COMPRESSOR.with_borrow_mut(|compressor| {
                    let deflate = match compressor {
                        Some((level, deflate)) if *level == self.level => deflate,
                        _ => &mut compressor.insert((self.level, new(self.level))).1,
                    };
                    deflate.reset();
                    if !self.history.is_empty() {
                        deflate
                            .set_dictionary(&self.history)
                            .expect("a raw compressor takes a dictionary after a reset");
                    }
                    compress(deflate, input, out);
                });
                self.checksum = if self.gzip {
                    zlib_rs::crc32::crc32(self.checksum, input)
                } else {
                    zlib_rs::adler32::adler32(self.checksum, input)
                };
                self.len = self.len.wrapping_add(input.len() as u32);
                self.remember(input);
            }
            if last {
                out.extend_from_slice(&FINAL_BLOCK);
                if self.gzip {
                    out.extend_from_slice(&self.checksum.to_le_bytes());
                    out.extend_from_slice(&self.len.to_le_bytes());
                } else {
                    out.extend_from_slice(&self.checksum.to_be_bytes());
                }
                self.history = Vec::new();
            }
        }

        /// Keeps the last `window` bytes of what was sent, `input` last.
        fn remember(&mut self, input: &[u8]) {
            let keep = self
                .window
                .saturating_sub(input.len())
                .min(self.history.len());
            self.history.drain(..self.history.len() - keep);
            let input = &input[input.len().saturating_sub(self.window)..];
            if self.history.capacity() < self.window {
                self.history.reserve_exact(self.window - self.history.len());
            }
            self.history.extend_from_slice(input);
        }
    }

    /// A raw DEFLATE compressor with the largest window, so that any stream's window fits.
    fn new(level: i32) -> Deflate {
        Deflate::new(level, false, 15)
    }

    /// Compresses all of `input` and flushes, appending to `out`.
    fn compress(deflate: &mut Deflate, input: &[u8], out: &mut Vec<u8>) {
        let mut read = 0;
        loop {
            let start = out.len();
            // Stored blocks are the worst case: 5 bytes per 16 KiB, and the flush's 5 to 10.
            let room = input.len() - read + input.len() / 1024 + 64;
            out.resize(start + room, 0);
            let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
            let status =
                deflate.compress(&input[read..], &mut out[start..], DeflateFlush::SyncFlush);
            read += (deflate.total_in() - before_in) as usize;
            let written = (deflate.total_out() - before_out) as usize;
            out.truncate(start + written);
            // All of it is out once the compressor has taken it all and had room to spare.
            let done = read == input.len() && written < room;
            match status {
                Ok(Status::Ok | Status::BufError) if !done => {}
                Ok(_) => return,
                Err(err) => unreachable!("a compressor in use refused a sync flush: {err:?}"),
            }
        }
    }
}

/// zstd, with libzstd.
///
/// A stream keeps its own compression context, sized for the window: the window's buffer, a
/// hash table and a chain table no larger than the window, and a block's worth of sequences.
#[cfg(feature = "compression-zstd")]
mod zstd {
    use zstd_safe::zstd_sys::ZSTD_EndDirective;
    use zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer};

    use super::Level;

    pub(super) struct Stream {
        level: i32,
        window_log: u32,
        /// Made at the first frame, dropped at the end.
        context: Option<CCtx<'static>>,
    }

    impl Stream {
        pub(super) fn new(level: Level, window_log: u8) -> Self {
            Self {
                level: super::scale(level, [1, 1, 3, 22]),
                window_log: u32::from(window_log),
                context: None,
            }
        }

        pub(super) fn encode(&mut self, input: &[u8], last: bool, out: &mut Vec<u8>) {
            let (level, window_log) = (self.level, self.window_log);
            let context = self
                .context
                .get_or_insert_with(|| context(level, window_log));
            let directive = if last {
                ZSTD_EndDirective::ZSTD_e_end
            } else {
                ZSTD_EndDirective::ZSTD_e_flush
            };
            let mut input = InBuffer::around(input);
            loop {
                out.reserve(input.src.len() - input.pos + 64);
                let mut output = OutBuffer::around_pos(out, out.len());
                let left = context
                    .compress_stream2(&mut output, &mut input, directive)
                    .unwrap_or_else(|code| {
                        unreachable!("zstd refused a flush: {}", zstd_safe::get_error_name(code))
                    });
                if left == 0 && input.pos == input.src.len() {
                    break;
                }
            }
            if last {
                self.context = None;
            }
        }
    }

    /// A context that compresses with `level` in a window of `2^window_log` bytes (at least
    /// zstd's smallest, 1 KiB, as the settings are), and keeps its tables within the window's
    /// size.
    fn context(level: i32, window_log: u32) -> CCtx<'static> {
        let mut context = CCtx::create();
        for parameter in [
            CParameter::CompressionLevel(level),
            CParameter::WindowLog(window_log),
            // A quarter of the window's entries (four bytes each): the window's size again.
            CParameter::HashLog(window_log - 2),
            CParameter::ChainLog(window_log - 2),
            CParameter::ChecksumFlag(false),
        ] {
            context
                .set_parameter(parameter)
                .expect("parameters within zstd's bounds");
        }
        context
    }
}

/// br, with the brotli crate.
///
/// A stream keeps its own encoder, with a window of the setting's size; its tables are far
/// larger than the window (about 308 KiB at the default quality), which is why br is offered
/// only when named.
#[cfg(feature = "compression-br")]
mod brotli {
    use brotli::enc::encode::{
        BrotliEncoderOperation, BrotliEncoderParameter, BrotliEncoderStateStruct,
    };
    use brotli::enc::StandardAlloc;

    use super::Level;

    pub(super) struct Stream {
        quality: u32,
        window_log: u32,
        /// Made at the first frame, dropped at the end.
        encoder: Option<BrotliEncoderStateStruct<StandardAlloc>>,
    }

    impl Stream {
        pub(super) fn new(level: Level, window_log: u8) -> Self {
            Self {
                // Quality 2 and 3 keep about 308 KiB per stream, 4 about 708 KiB, 5 and above
                // 33 MiB (measured with the brotli crate 8.0); 0 and 1 barely compress a frame.
                quality: super::scale(level, [0, 2, 3, 11]) as u32,
                window_log: u32::from(window_log),
                encoder: None,
            }
        }

        pub(super) fn encode(&mut self, input: &[u8], last: bool, out: &mut Vec<u8>) {
            let (quality, window_log) = (self.quality, self.window_log);
            let encoder = self.encoder.get_or_insert_with(|| {
                let mut encoder = BrotliEncoderStateStruct::new(StandardAlloc::default());
                encoder.set_parameter(BrotliEncoderParameter::BROTLI_PARAM_QUALITY, quality);
                encoder.set_parameter(BrotliEncoderParameter::BROTLI_PARAM_LGWIN, window_log);
                encoder
            });
            let operation = if last {
                BrotliEncoderOperation::BROTLI_OPERATION_FINISH
            } else {
                BrotliEncoderOperation::BROTLI_OPERATION_FLUSH
            };
            let (mut available_in, mut read) = (input.len(), 0);
            loop {
                let start = out.len();
                let room = available_in + 64;
                out.resize(start + room, 0);
                let (mut available_out, mut written) = (room, 0);
                let ok = encoder.compress_stream(
                    operation,
                    &mut available_in,
                    input,
                    &mut read,
                    &mut available_out,
                    &mut out[start..],
                    &mut written,
                    &mut None,
                    &mut |_, _, _, _| (),
                );
                assert!(ok, "brotli refused a flush");
                out.truncate(start + written);
                let done = if last {
                    encoder.is_finished()
                } else {
                    available_in == 0 && !encoder.has_more_output()
                };
                if done {
                    break;
                }
            }
            if last {
                self.encoder = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events alike in shape, as a feed's are: what compression is for.
    pub(crate) fn events(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                format!(
                    "id: {i}\ndata: {{\"id\":\"ord_{:06}\",\"type\":\"order.updated\",\"status\":\"{}\",\
                     \"customer\":{{\"id\":\"cus_{}\",\"name\":\"Ada Lovelace\"}},\"total\":{}.{:02}}}\n\n",
                    i * 7919 % 1_000_000,
                    ["paid", "shipped", "delivered"][i % 3],
                    i * 31 % 10_000,
                    i * 13 % 500,
                    i % 100,
                )
                .into_bytes()
            })
            .collect()
    }

    fn settings(coding: Coding, level: Level, window: usize) -> Compression {
        Compression::new()
            .codings([coding])
            .level(level)
            .window(window)
            .check()
            .unwrap()
    }

    use crate::compression::decode;

    /// A client reading a coded stream as its bytes arrive.
    struct Client {
        decoder: decode::Decoder,
        decoded: Vec<u8>,
    }

    impl Client {
        fn new(coding: Coding) -> Self {
            Self {
                decoder: decode::Decoder::of(Some(coding.as_str())).unwrap(),
                decoded: Vec::new(),
            }
        }

        /// Everything decoded so far, after `bytes` more.
        fn feed(&mut self, bytes: &[u8]) -> &[u8] {
            let more = self.decoder.feed(bytes);
            self.decoded.extend(more);
            &self.decoded
        }
    }

    /// Every coding this build writes.
    fn built() -> impl Iterator<Item = Coding> {
        Coding::ALL.into_iter().filter(|c| c.is_built())
    }

    #[test]
    fn streams_decode_frame_by_frame() {
        let events = events(60);
        for coding in built() {
            for (level, window) in [
                (Level::Default, 4096),
                (Level::Fastest, 1024),
                (Level::Precise(9), 32 * 1024),
                (Level::Precise(0), 2048),
                // Clamped to each coding's highest.
                (Level::Precise(99), 1024),
            ] {
                let mut encoder = Encoder::new(coding, &settings(coding, level, window));
                let mut client = Client::new(coding);
                let (mut sent, mut plain) = (0, Vec::new());
                for event in &events {
                    let frame = encoder.encode(event, false);
                    plain.extend_from_slice(event);
                    sent += frame.len();
                    // Each event is whole in what has arrived, without waiting for the next.
                    let decoded = client.feed(&frame);
                    assert!(decoded == plain.as_slice(), "{coding} {level:?} {window}");
                }
                let end = encoder.encode(b"", true);
                assert!(
                    client.feed(&end) == plain.as_slice(),
                    "{coding} {level:?} {window}"
                );
                assert!(encoder.encode(b"late", true).is_empty());
                if level == Level::Default {
                    assert!(
                        sent * 10 < plain.len() * 4,
                        "{coding} {level:?} {window}: {sent} of {}",
                        plain.len()
                    );
                }
            }
        }
    }

    #[cfg(feature = "compression-gzip")]
    #[test]
    fn deflate_streams_end_with_their_checksums() {
        use std::io::Read;
        let events = events(20);
        for coding in [Coding::Gzip, Coding::Deflate] {
            let mut encoder = Encoder::new(coding, &settings(coding, Level::Default, 1024));
            let mut all = Vec::new();
            for (i, event) in events.iter().enumerate() {
                all.extend_from_slice(&encoder.encode(event, i + 1 == events.len()));
            }
            let mut whole = Vec::new();
            if coding == Coding::Gzip {
                flate2::read::GzDecoder::new(&all[..])
                    .read_to_end(&mut whole)
                    .unwrap();
            } else {
                flate2::read::ZlibDecoder::new(&all[..])
                    .read_to_end(&mut whole)
                    .unwrap();
            }
            assert_eq!(whole, events.concat());
        }
    }

    #[test]
    fn frames_larger_than_the_window_and_the_buffers() {
        // Incompressible bytes, so that the compressor's output outgrows its first buffer.
        let mut state = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        for coding in built() {
            let mut encoder = Encoder::new(coding, &settings(coding, Level::Default, 1024));
            let mut client = Client::new(coding);
            let mut plain = Vec::new();
            for input in [&noise[..], b"small", &noise[..70_000], b""] {
                let frame = encoder.encode(input, input.is_empty());
                plain.extend_from_slice(input);
                let decoded = client.feed(&frame);
                assert_eq!(decoded.len(), plain.len(), "{coding}");
                assert!(decoded == plain.as_slice(), "{coding}");
            }
        }
    }

    #[cfg(feature = "compression-gzip")]
    #[test]
    fn a_whole_answer_is_one_member() {
        use std::io::Read;
        let body = events(10).concat();
        let coding = Coding::Gzip;
        let mut encoder = Encoder::new(coding, &settings(coding, Level::Default, 4096));
        let bytes = encoder.encode(&body, true);
        let mut whole = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!(whole, body);
    }
}
