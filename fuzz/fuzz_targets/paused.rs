//! What the fuzz targets that run requests share: a runtime whose clock is paused.

use std::sync::OnceLock;

/// A current-thread runtime with a paused clock: holds expire as soon as nothing else can
/// happen, so that no input makes a target wait.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    })
}
