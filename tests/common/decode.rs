//! Decoders for each content coding, fed a body's bytes as they arrive: what a client that
//! reads a compressed stream does.

use std::io::Write as _;

/// A decoder of one coded body. [`feed`](Self::feed) gives back the bytes decoded from what
/// has arrived so far, without waiting for more: the sender's flushes make them whole.
pub enum Decoder {
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Brotli(
        Box<
            brotli::BrotliState<
                brotli::HeapAlloc<u8>,
                brotli::HeapAlloc<u32>,
                brotli::HeapAlloc<brotli::HuffmanCode>,
            >,
        >,
    ),
    Zstd(zstd_safe::DCtx<'static>),
}

impl Decoder {
    /// The decoder of a `Content-Encoding`; `None` for identity.
    pub fn of(content_encoding: Option<&str>) -> Option<Self> {
        Some(match content_encoding? {
            "gzip" => Self::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            "deflate" => Self::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            "br" => Self::Brotli(Box::new(brotli::BrotliState::new(
                Default::default(),
                Default::default(),
                Default::default(),
            ))),
            "zstd" => Self::Zstd(zstd_safe::DCtx::create()),
            "identity" => return None,
            other => panic!("unknown content coding {other}"),
        })
    }

    /// The bytes decoded from `bytes`, the next that arrived.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Gzip(decoder) => {
                decoder.write_all(bytes).unwrap();
                decoder.flush().unwrap();
                out.append(decoder.get_mut());
            }
            Self::Deflate(decoder) => {
                decoder.write_all(bytes).unwrap();
                decoder.flush().unwrap();
                out.append(decoder.get_mut());
            }
            Self::Brotli(state) => {
                let (mut available_in, mut read) = (bytes.len(), 0);
                loop {
                    let mut buffer = vec![0; 64 * 1024];
                    let (mut available_out, mut written, mut total) = (buffer.len(), 0, 0);
                    let result = brotli::BrotliDecompressStream(
                        &mut available_in,
                        &mut read,
                        bytes,
                        &mut available_out,
                        &mut written,
                        &mut buffer,
                        &mut total,
                        state,
                    );
                    out.extend_from_slice(&buffer[..written]);
                    match result {
                        brotli::BrotliResult::NeedsMoreOutput => {}
                        brotli::BrotliResult::ResultFailure => panic!("not a brotli stream"),
                        _ => break,
                    }
                }
            }
            Self::Zstd(context) => {
                let mut input = zstd_safe::InBuffer::around(bytes);
                loop {
                    out.reserve(64 * 1024);
                    let written = out.len();
                    let mut output = zstd_safe::OutBuffer::around_pos(&mut out, written);
                    context
                        .decompress_stream(&mut output, &mut input)
                        .unwrap_or_else(|code| panic!("{}", zstd_safe::get_error_name(code)));
                    let full = output.pos() == output.capacity();
                    if input.pos == input.src.len() && !full {
                        break;
                    }
                }
            }
        }
        out
    }
}
