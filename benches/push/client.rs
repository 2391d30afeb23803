//! The load client: a minimal HTTP/1.1 connection over raw TCP, which costs the same against
//! every server, the requests it sends, and the source addresses of parked clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A minimal HTTP/1.1 client connection over raw TCP.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) buf: Vec<u8>,
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `--head-pad BYTES`: every GET of the load client carries an `x-pad` header of that many
/// bytes, as a client with large cookies or a hostile one would send; 0 (no such header) by
/// default.
pub(super) static HEAD_PAD: AtomicUsize = AtomicUsize::new(0);

pub(super) fn get_request(path: &str, accept: Option<&str>) -> Vec<u8> {
    let mut accept = accept.map_or(String::new(), |a| format!("accept: {a}\r\n"));
    let pad = HEAD_PAD.load(Ordering::Relaxed);
    if pad > 0 {
        accept.push_str(&format!("x-pad: {}\r\n", "a".repeat(pad)));
    }
    format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{accept}\r\n").into_bytes()
}

fn post_request(path: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n").into_bytes()
}

/// Where the parked clients of `--only nchan` and `--only scaling` connect from: 127.0.0.2 to
/// 127.0.0.9 in turn (all of 127.0.0.0/8 is loopback on Linux), so that no source address needs
/// more than N/8 ephemeral ports: 6,250 each at 50,000 polls, of the 28,232 in Linux's default
/// `ip_local_port_range`.
pub(super) const SOURCES: usize = 8;

pub(super) fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCES) as u8))
}

/// A response head: status, and how its body is framed.
pub(super) struct Head {
    pub(super) status: u16,
    length: Option<usize>,
    pub(super) chunked: bool,
    /// Where the body starts in the connection's buffer.
    pub(super) end: usize,
}

fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).expect("response head is text");
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut length = None;
    let mut chunked = false;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    Some(Head {
        status,
        length,
        chunked,
        end,
    })
}

/// The length of a complete chunked body at the start of `buf`, if it is all there.
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line = find(&buf[at..], b"\r\n")?;
        let size_text = std::str::from_utf8(&buf[at..at + line]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).expect("chunk size");
        at += line + 2;
        if size == 0 {
            // No trailers from these servers: the final CRLF follows at once.
            return (buf.len() >= at + 2).then_some(at + 2);
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        at += size + 2;
    }
}

impl Conn {
    pub(super) async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    /// Connects from `source` (port chosen by the kernel) and closes with a reset
    /// (`SO_LINGER` 0), so that tens of thousands of clients leave no `TIME_WAIT` behind to
    /// hold the ports of the next round.
    pub(super) async fn connect_from(addr: SocketAddr, source: IpAddr) -> std::io::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        // A zero linger never blocks (the deprecation is about other values).
        #[allow(deprecated)]
        socket.set_linger(Some(Duration::ZERO))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    pub(super) async fn send(&mut self, request: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(request).await
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(4096);
        }
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    pub(super) async fn head(&mut self) -> std::io::Result<Head> {
        loop {
            if let Some(head) = parse_head(&self.buf) {
                return Ok(head);
            }
            self.fill().await?;
        }
    }

    /// Reads one whole response and returns its status and body length.
    pub(super) async fn response(&mut self) -> std::io::Result<(u16, usize)> {
        let (head, body_len) = self.whole_response().await?;
        self.buf.drain(..head.end + body_len);
        Ok((head.status, body_len))
    }

    /// Reads one whole response and returns its status and body as sent (with its chunk
    /// framing, if chunked).
    pub(super) async fn response_body(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        let (head, body_len) = self.whole_response().await?;
        let body = self.buf[head.end..head.end + body_len].to_vec();
        self.buf.drain(..head.end + body_len);
        Ok((head.status, body))
    }

    /// Reads until the buffer holds one whole response; returns its head and body length.
    pub(super) async fn whole_response(&mut self) -> std::io::Result<(Head, usize)> {
        let head = self.head().await?;
        let body_len = loop {
            let body = &self.buf[head.end..];
            let complete = if head.status == 204 || head.status == 304 {
                Some(0)
            } else if let Some(length) = head.length {
                (body.len() >= length).then_some(length)
            } else if head.chunked {
                chunked_len(body)
            } else {
                panic!("a response without a length")
            };
            if let Some(len) = complete {
                break len;
            }
            self.fill().await?;
        };
        Ok((head, body_len))
    }

    pub(super) async fn post(&mut self, path: &str) -> std::io::Result<()> {
        self.send(&post_request(path)).await?;
        let (status, _) = self.response().await?;
        assert_eq!(status, 200, "POST {path}");
        Ok(())
    }

    /// The server's `/stats`: parked requests, and lagged broadcast events.
    pub(super) async fn stats(&mut self) -> std::io::Result<(usize, u64)> {
        self.send(&get_request("/stats", None)).await?;
        let head = self.head().await?;
        let length = head.length.expect("stats has a length");
        while self.buf.len() < head.end + length {
            self.fill().await?;
        }
        let body = String::from_utf8_lossy(&self.buf[head.end..head.end + length]).into_owned();
        self.buf.drain(..head.end + length);
        let mut parts = body.split_whitespace();
        let waiting = parts.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let lagged = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        Ok((waiting, lagged))
    }
}

/// Waits until the server behind `control` counts `n` parked requests; panics after 120 s.
pub(super) async fn wait_parked(control: &mut Conn, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (waiting, _) = control.stats().await.expect("stats");
        if waiting >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {waiting} of {n} polls parked after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last allocations settle before memory is read.
    tokio::time::sleep(Duration::from_millis(200)).await;
}
