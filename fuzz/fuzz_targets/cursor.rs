//! Cursor parsing: never panics, and whatever it accepts is in canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_push::Cursor;

fuzz_target!(|data: &[u8]| {
    if let Ok(cursor) = Cursor::parse_bytes(data) {
        assert_eq!(cursor.to_string().as_bytes(), data);
    }
});
