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
            _ => {
                let _ = (level, window_log);
                panic!("compression coding {coding} is not built")
            }
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
                level: super::scale(level, [0, 1, 6, 9]),
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

    /// A decoder fed a stream's bytes as they arrive.
    #[cfg(feature = "compression-gzip")]
    struct Inflate {
        gzip: bool,
        header: usize,
        inflate: flate2::Decompress,
        out: Vec<u8>,
    }

    #[cfg(feature = "compression-gzip")]
    impl Inflate {
        fn new(gzip: bool) -> Self {
            Self {
                gzip,
                header: if gzip { 10 } else { 0 },
                inflate: flate2::Decompress::new(!gzip),
                out: Vec::new(),
            }
        }

        /// Everything decoded so far, after `bytes` more.
        fn feed(&mut self, mut bytes: &[u8]) -> &[u8] {
            let skip = self.header.min(bytes.len());
            self.header -= skip;
            bytes = &bytes[skip..];
            while !bytes.is_empty() {
                self.out.reserve(64 * 1024);
                let before = self.inflate.total_in();
                let status = self
                    .inflate
                    .decompress_vec(bytes, &mut self.out, flate2::FlushDecompress::Sync)
                    .unwrap();
                bytes = &bytes[(self.inflate.total_in() - before) as usize..];
                if status == flate2::Status::StreamEnd {
                    // What follows is gzip's trailer.
                    assert!(self.gzip && bytes.len() == 8 || bytes.is_empty(), "{bytes:?}");
                    break;
                }
            }
            &self.out
        }
    }

    #[cfg(feature = "compression-gzip")]
    #[test]
    fn deflate_streams_decode_frame_by_frame() {
        use std::io::Read;
        let events = events(60);
        for (coding, level, window) in [
            (Coding::Gzip, Level::Default, 4096),
            (Coding::Gzip, Level::Fastest, 1024),
            (Coding::Gzip, Level::Precise(9), 32 * 1024),
            (Coding::Gzip, Level::Precise(0), 4096),
            (Coding::Deflate, Level::Default, 4096),
            (Coding::Deflate, Level::Precise(3), 2048),
        ] {
            let mut encoder = Encoder::new(coding, &settings(coding, level, window));
            let mut decoder = Inflate::new(coding == Coding::Gzip);
            let (mut sent, mut plain, mut all) = (0, Vec::new(), Vec::new());
            for event in &events {
                let frame = encoder.encode(event, false);
                plain.extend_from_slice(event);
                sent += frame.len();
                all.extend_from_slice(&frame);
                // Each event is whole in what has arrived, without waiting for the next.
                assert_eq!(decoder.feed(&frame), plain, "{coding} {level:?} {window}");
            }
            let end = encoder.encode(b"", true);
            all.extend_from_slice(&end);
            assert_eq!(decoder.feed(&end), plain);
            assert!(encoder.encode(b"late", true).is_empty());
            // The whole stream, checksum and length included.
            let mut whole = Vec::new();
            if coding == Coding::Gzip {
                flate2::read::GzDecoder::new(&all[..]).read_to_end(&mut whole).unwrap();
            } else {
                flate2::read::ZlibDecoder::new(&all[..]).read_to_end(&mut whole).unwrap();
            }
            assert_eq!(whole, plain);
            if level != Level::Precise(0) {
                assert!(sent * 10 < plain.len() * 4, "{coding} {level:?} {window}: {sent} of {}", plain.len());
            }
        }
    }

    #[cfg(feature = "compression-gzip")]
    #[test]
    fn deflate_frames_larger_than_the_window_and_the_buffers() {
        use std::io::Read;
        let coding = Coding::Gzip;
        let mut encoder = Encoder::new(coding, &settings(coding, Level::Default, 1024));
        let mut decoder = Inflate::new(true);
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
        let mut plain = Vec::new();
        let mut all = Vec::new();
        for input in [&noise[..], b"small", &noise[..70_000], b""] {
            let frame = encoder.encode(input, input.is_empty());
            plain.extend_from_slice(input);
            all.extend_from_slice(&frame);
            assert_eq!(decoder.feed(&frame), plain);
        }
        let mut whole = Vec::new();
        flate2::read::GzDecoder::new(&all[..]).read_to_end(&mut whole).unwrap();
        assert_eq!(whole, plain);
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
        flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut whole).unwrap();
        assert_eq!(whole, body);
    }
}
