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

/// A layer and its builder. The layer: the cheap-to-clone struct (the `Config` of the layer's
/// module, and the format `F`), its constructors, the count of the requests it holds, and
/// `Layer::layer`, which builds the service `$service` (made by `define_push_service!`). The
/// builder: the settings both layers share, the `Settings` of the layer's module (its own, with
/// `Settings::new()` their defaults) and the format, with `new`, `Default` and `format`; the
/// shared setters come from `define_shared_setters!`, the layer's own and `build` from its module.
macro_rules! define_push_layer {
    (
        $(#[$doc:meta])*
        pub struct $layer:ident<F = $format:ty>, serves $service:ident;
        $(#[$count_doc:meta])*
        fn $count:ident;
        $(#[$builder_doc:meta])*
        pub struct $builder:ident;
        $(#[$format_doc:meta])*
        fn format<G: $format_trait:path>;
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $layer<F = $format> {
            config: std::sync::Arc<Config>,
            format: F,
        }

        impl $layer {
            #[doc = concat!("A layer with the default settings (see [`", stringify!($builder), "`]).")]
            pub fn new() -> Self {
                $builder::new()
                    .build()
                    .expect("default settings are valid")
            }

            /// A builder for a layer with other settings.
            pub fn builder() -> $builder {
                $builder::new()
            }
        }

        impl<F> $layer<F> {
            $(#[$count_doc])*
            pub fn $count(&self) -> usize {
                self.config.pipeline.held()
            }
        }

        impl Default for $layer {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<F: Clone> $layer<F> {
            /// Wraps the event source `source` in this layer's service: the same as
            /// [`Layer::layer`](tower_layer::Layer::layer), without having to import the trait
            /// (or depend on `tower`) to call it.
            ///
            /// # Examples
            ///
            #[doc = concat!(
                "```\n",
                "use tower_push::{", stringify!($layer), ", MemoryLog};\n\n",
                "let service = ", stringify!($layer), "::new().layer(MemoryLog::new().topic(\"news\"));\n",
                "assert_eq!(service.", stringify!($count), "(), 0);\n",
                "```",
            )]
            pub fn layer<S>(&self, source: S) -> $service<S, F> {
                $service {
                    inner: source,
                    config: self.config.clone(),
                    format: self.format.clone(),
                }
            }
        }

        impl<S, F: Clone> tower_layer::Layer<S> for $layer<F> {
            type Service = $service<S, F>;

            fn layer(&self, inner: S) -> Self::Service {
                $layer::layer(self, inner)
            }
        }

        $(#[$builder_doc])*
        #[derive(Clone, Debug)]
        pub struct $builder<F = $format> {
            shared: crate::config::Shared,
            /// The settings of this layer alone.
            settings: Settings,
            format: F,
        }

        impl $builder {
            /// The default settings.
            pub fn new() -> Self {
                Self {
                    shared: crate::config::Shared::new(),
                    settings: Settings::new(),
                    format: <$format>::default(),
                }
            }
        }

        impl Default for $builder {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<F> $builder<F> {
            $(#[$format_doc])*
            #[must_use]
            pub fn format<G: $format_trait>(self, format: G) -> $builder<G> {
                $builder {
                    shared: self.shared,
                    settings: self.settings,
                    format,
                }
            }
        }
    };
}

/// A layer's service: the struct over an event source `S` in a format `F` (`inner`, and the
/// layer's `config` and `format`, which `Layer::layer` fills in), its constructor with the
/// default settings, the inner-service accessors and the count of the requests the layer holds.
macro_rules! define_push_service {
    (
        $(#[$doc:meta])*
        pub struct $service:ident<S, F = $format:ty>, built by $layer:ident;
        $(#[$count_doc:meta])*
        fn $count:ident;
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $service<S, F = $format> {
            pub(super) inner: S,
            pub(super) config: std::sync::Arc<super::layer::Config>,
            pub(super) format: F,
        }

        impl<S> $service<S> {
            #[doc = concat!(
                "A service over the event source `source` with the default settings, like \
                 `tower::timeout::Timeout::new`; build a [`", stringify!($layer), "`](super::",
                stringify!($layer), ") for others.\n\n",
                "# Examples\n\n",
                "```\n",
                "use tower_push::{", stringify!($service), ", MemoryLog};\n\n",
                "let service = ", stringify!($service), "::new(MemoryLog::new().topic(\"news\"));\n",
                "assert_eq!(service.get_ref().name(), \"news\");\n",
                "```",
            )]
            pub fn new(source: S) -> Self {
                super::$layer::new().layer(source)
            }
        }

        impl<S, F> $service<S, F> {
            define_inner_service_accessors!();

            $(#[$count_doc])*
            pub fn $count(&self) -> usize {
                self.config.pipeline.held()
            }
        }
    };
}

/// The associated types and the readiness of both layers' services: an answer with a
/// [`PushBody`](crate::PushBody), never an error (every condition is an HTTP answer), from the
/// `ResponseFuture<S, F>` of the layer's module, and always ready.
macro_rules! define_push_service_readiness {
    () => {
        type Response = http::Response<crate::PushBody>;
        type Error = std::convert::Infallible;
        type Future = ResponseFuture<S, F>;

        /// Always ready: the event source is driven to readiness inside each answer (a poll's
        /// response future, a stream's body), so a source that is not ready is answered over
        /// HTTP (a `503`, a stream that waits), never turned into back-pressure on the
        /// connection.
        fn poll_ready(
            &mut self,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
    };
}

/// The setters of the settings both builders share (`crate::config::Shared`, in a field
/// `shared`). The settings that mean the same for a poll and a stream are documented here, once;
/// the caps take the builder's own names, and they and the proxy idle timeout (which each
/// layer checks against its own interval) take the builder's docs.
macro_rules! define_shared_setters {
    (
        layer: $layer:ident;
        $(#[$max_doc:meta])* fn $max:ident;
        $(#[$per_key_doc:meta])* fn $max_per_key:ident;
        $(#[$idle_doc:meta])* fn proxy_idle_timeout;
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

        /// Compresses answers in a coding the request accepts, each stream frame flushed so
        /// that the client reads every message as soon as it arrives; see the
        /// [`compression`](crate::compression) module.
        ///
        /// Default: no compression.
        ///
        /// # Errors
        ///
        /// `build` fails with [`ConfigError::CodingNotBuilt`](crate::ConfigError::CodingNotBuilt)
        /// for a coding whose feature is off, and with
        /// [`ConfigError::CompressionWindow`](crate::ConfigError::CompressionWindow) for a window
        /// out of range.
        #[must_use]
        pub fn compression(mut self, compression: crate::compression::Compression) -> Self {
            self.shared.compression = Some(compression);
            self
        }

        /// Checks who may read which topics, with `authorize`: before a request reaches the
        /// source, and again while it is held (see [`reauthorize_every`](Self::reauthorize_every)).
        /// A request the check refuses is answered `401 unauthenticated` or, for a topic the
        /// credentials do not grant, exactly as a topic the source does not serve; see the
        /// [`authorize`](crate::authorize) module.
        ///
        /// Default: no check.
        #[must_use]
        pub fn authorize(mut self, authorize: impl crate::authorize::Authorize) -> Self {
            self.shared.authorizer = Some(crate::authorize::Authorizer::new(authorize));
            self
        }

        /// How often a request that is still held (an open stream, a long poll held longer than
        /// this) checks its authorization again; when it no longer may, it ends with `401
        /// unauthenticated` (a stream, with the format's final message for it). Needs
        /// [`authorize`](Self::authorize).
        ///
        /// Default is 60 seconds.
        #[must_use]
        pub fn reauthorize_every(mut self, interval: std::time::Duration) -> Self {
            self.shared.reauthorize_every = Some(interval);
            self
        }

        /// The most events one answer carries (a poll's answer, a stream's frame); events that
        /// are ready together go out together, and a client that is further behind gets the
        /// rest at once (in the next frame, or with its next request).
        ///
        /// Default is 256.
        #[must_use]
        pub fn max_events(mut self, max: usize) -> Self {
            self.shared.max_events = max;
            self
        }

        /// The most bytes of event data one answer (a poll's answer, a stream's frame) carries,
        /// so that an answer the client does not read holds a bounded amount of memory whatever
        /// the events weigh; the events left out follow at once (in the next frame, or with the
        /// next request). An answer always carries at least one event, so an event larger than
        /// this still goes out, alone. Framing adds the id and about 20 bytes per event.
        ///
        /// Default is 256 KiB.
        #[must_use]
        pub fn max_bytes(mut self, max: usize) -> Self {
            self.shared.max_bytes = max;
            self
        }

        /// The largest request head (URI and headers, in bytes) a poll or a stream may have. A
        /// held poll or an open stream keeps its head for its source for as long as it lasts,
        /// so this bounds what each one holds; a larger head is answered `431 head_too_large`.
        ///
        /// Default is 32 KiB.
        #[must_use]
        pub fn max_head_bytes(mut self, max: usize) -> Self {
            self.shared.max_head_bytes = max;
            self
        }

        /// The query parameter that carries the cursor (a stream's start cursor). The
        /// `Last-Event-ID` header is read too, and wins when both are present (`EventSource`
        /// sends it when it reconnects).
        ///
        /// Default is `after`.
        #[must_use]
        pub fn cursor_param(mut self, name: impl Into<String>) -> Self {
            self.shared.param = name.into();
            self
        }

        /// Where a request without a cursor (a poll, or a stream without a start cursor)
        /// starts.
        ///
        /// Default is [`Origin::Head`](crate::source::Origin::Head): only events published from
        /// now on.
        #[must_use]
        pub fn origin(mut self, origin: crate::source::Origin) -> Self {
            self.shared.origin = origin;
            self
        }

        /// The shutdown signal: once triggered, held polls are answered at once as if their
        /// hold had expired, open streams send a final `shutdown` message and end, and new
        /// requests get `503` with `Retry-After`.
        ///
        /// Default is none.
        #[must_use]
        pub fn shutdown(mut self, shutdown: crate::Shutdown) -> Self {
            self.shared.shutdown = Some(shutdown);
            self
        }

        /// The window over which clients spread their return after a shutdown: each held
        /// poll's answer, and each open stream's final `shutdown` message, carries a delay drawn
        /// at random from zero to this, so that ten thousand clients do not reconnect to the
        /// next process in the same millisecond. A poll's answer carries it in `Push-Retry-Ms`
        /// (and `Retry-After`, rounded up to whole seconds), and answers without a delay when
        /// this is zero; an SSE stream in a `retry:` field, which `EventSource` follows by
        /// itself; an NDJSON stream in `retry_ms`.
        ///
        /// Default is 5 seconds.
        #[must_use]
        pub fn reconnect_window(mut self, window: std::time::Duration) -> Self {
            self.shared.reconnect_window = window;
            self
        }

        /// The query parameter that names the topics of a multiplexed request (see
        /// [Several topics](crate#several-topics)): `?topics=inbox,presence` follows both
        /// topics with one request and one composite cursor. The inner service gets one
        /// [`Subscribe`](crate::source::Subscribe) per topic, each naming its topic.
        ///
        /// Default is `topics`.
        #[must_use]
        pub fn topics_param(mut self, name: impl Into<String>) -> Self {
            self.shared.topics_param = name.into();
            self
        }

        /// How many topics one multiplexed request may name; a request naming more gets `400
        /// too_many_topics`. `0` turns multiplexing off: the topics parameter is then read as
        /// nothing special.
        ///
        /// A parked request holds one subscription per topic (a few hundred bytes each with the
        /// in-memory log), and its composite cursor, sent back in every SSE `id:`, grows by up
        /// to 38 bytes per topic. 16 covers what one screen of an application follows (an
        /// inbox, notifications, presence, a few open documents) while a parked request stays
        /// near the cost of one that follows a single topic, and a cursor stays under 600
        /// bytes. At most 256.
        ///
        /// Default is 16.
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```\n",
            "use tower_push::{ConfigError, ", stringify!($layer), "};\n\n",
            "let layer = ", stringify!($layer), "::builder().max_topics(64).build()?;\n",
            "# let _ = layer;\n",
            "assert!(matches!(\n",
            "    ", stringify!($layer), "::builder().max_topics(1000).build(),\n",
            "    Err(ConfigError::TooManyTopics { .. })\n",
            "));\n",
            "# Ok::<(), ConfigError>(())\n",
            "```",
        )]
        #[must_use]
        pub fn max_topics(mut self, max: usize) -> Self {
            self.shared.max_topics = max;
            self
        }
    };
}
