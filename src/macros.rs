//! Macros for what every service of the crate has alike.

/// The accessors of a service's inner event source (`get_ref`, `get_mut`, `into_inner`), for a
/// service with a field `inner: S`.
macro_rules! define_inner_service_accessors {
    () => {
        /// The event source.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The event source, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes the service and returns the event source.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

/// The setters of the settings both builders share (`crate::config::Shared`, in a field
/// `shared`), each with the docs its builder gives it; the caps take the builder's own names.
macro_rules! define_shared_setters {
    (
        $(#[$max_doc:meta])* fn $max:ident;
        $(#[$per_key_doc:meta])* fn $max_per_key:ident;
        $(#[$idle_doc:meta])* fn proxy_idle_timeout;
        $(#[$events_doc:meta])* fn max_events;
        $(#[$bytes_doc:meta])* fn max_bytes;
        $(#[$head_doc:meta])* fn max_head_bytes;
        $(#[$param_doc:meta])* fn cursor_param;
        $(#[$origin_doc:meta])* fn origin;
        $(#[$shutdown_doc:meta])* fn shutdown;
        $(#[$reconnect_doc:meta])* fn reconnect_window;
        $(#[$topics_doc:meta])* fn topics_param;
        $(#[$max_topics_doc:meta])* fn max_topics;
    ) => {
        $(#[$max_doc])*
        #[must_use]
        pub fn $max(mut self, max: usize) -> Self {
            self.shared.max = Some(max);
            self
        }

        $(#[$per_key_doc])*
        #[must_use]
        pub fn $max_per_key<K>(mut self, max: usize, key: K) -> Self
        where
            K: Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
        {
            self.shared.max_per_key = Some((max, crate::limit::KeyFn::new(key)));
            self
        }

        $(#[$idle_doc])*
        #[must_use]
        pub fn proxy_idle_timeout(mut self, idle: std::time::Duration) -> Self {
            self.shared.proxy_idle = Some(idle);
            self
        }

        $(#[$events_doc])*
        #[must_use]
        pub fn max_events(mut self, max: usize) -> Self {
            self.shared.max_events = max;
            self
        }

        $(#[$bytes_doc])*
        #[must_use]
        pub fn max_bytes(mut self, max: usize) -> Self {
            self.shared.max_bytes = max;
            self
        }

        $(#[$head_doc])*
        #[must_use]
        pub fn max_head_bytes(mut self, max: usize) -> Self {
            self.shared.max_head_bytes = max;
            self
        }

        $(#[$param_doc])*
        #[must_use]
        pub fn cursor_param(mut self, name: impl Into<String>) -> Self {
            self.shared.param = name.into();
            self
        }

        $(#[$origin_doc])*
        #[must_use]
        pub fn origin(mut self, origin: crate::source::Origin) -> Self {
            self.shared.origin = origin;
            self
        }

        $(#[$shutdown_doc])*
        #[must_use]
        pub fn shutdown(mut self, shutdown: crate::Shutdown) -> Self {
            self.shared.shutdown = Some(shutdown);
            self
        }

        $(#[$reconnect_doc])*
        #[must_use]
        pub fn reconnect_window(mut self, window: std::time::Duration) -> Self {
            self.shared.reconnect_window = window;
            self
        }

        $(#[$topics_doc])*
        #[must_use]
        pub fn topics_param(mut self, name: impl Into<String>) -> Self {
            self.shared.topics_param = name.into();
            self
        }

        $(#[$max_topics_doc])*
        #[must_use]
        pub fn max_topics(mut self, max: usize) -> Self {
            self.shared.max_topics = max;
            self
        }
    };
}
