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

/// A layer's service: the struct over an event source `S` in a format `F` (`inner`, and the
/// layer's `config` and `format`, which `Layer::layer` fills in), its constructor with the
/// default settings, the inner-service accessors and the count of the requests the layer holds.
macro_rules! define_push_service {
    (
        $(#[$doc:meta])*
        pub struct $service:ident<S, F = $format:ty>, built by $layer:ident in $mode:ident;
        $(#[$count_doc:meta])*
        fn $count:ident;
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $service<S, F = $format> {
            pub(crate) inner: S,
            pub(crate) config: std::sync::Arc<crate::layer::Config<crate::layer::$mode>>,
            pub(crate) format: F,
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
