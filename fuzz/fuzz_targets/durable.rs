//! Whole Durable Streams requests: any method, target, protocol header and body gets an answer
//! from the documented set, never a panic or a hang, and offsets parse only in canonical form.
#![no_main]

mod paused;

use std::sync::OnceLock;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Uri};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use tower_push::durable::headers::REQUEST_HEADERS;
use tower_push::durable::{DurableStreams, MemoryStore, Offset};

fn service() -> &'static DurableStreams<MemoryStore> {
    static SERVICE: OnceLock<DurableStreams<MemoryStore>> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let store = MemoryStore::builder().max_streams(64).max_bytes(1 << 20).build();
        DurableStreams::builder(store).max_body_bytes(4096).build().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(offset) = text.parse::<Offset>() {
            if offset < Offset::new(10_000_000_000_000_000) {
                assert_eq!(offset.to_string(), text);
            }
        }
    }
    // [method, header index, target length, target, header value length, header value, body]
    let [method, header, target_len, rest @ ..] = data else { return };
    let methods = [Method::GET, Method::PUT, Method::POST, Method::HEAD, Method::DELETE, Method::OPTIONS];
    let method = methods[*method as usize % methods.len()].clone();
    let (target, rest) = rest.split_at((*target_len as usize).min(rest.len()));
    let Some((&value_len, rest)) = rest.split_first() else { return };
    let (value, body) = rest.split_at((value_len as usize).min(rest.len()));
    let Ok(uri) = Uri::try_from(target) else { return };
    let mut builder = Request::builder().method(method).uri(uri);
    if let Ok(value) = HeaderValue::from_bytes(value) {
        // `Content-Type` and the protocol's own headers.
        let name = match *header as usize % (REQUEST_HEADERS.len() + 1) {
            0 => CONTENT_TYPE,
            i => REQUEST_HEADERS[i - 1].clone(),
        };
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(String::from_utf8_lossy(body).into_owned()) else { return };

    paused::runtime().block_on(async {
        let response = service().clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        assert!(
            matches!(status, 200 | 201 | 204 | 304 | 400 | 403 | 404 | 405 | 409 | 410 | 413 | 503 | 507),
            "{status}"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    });
});
