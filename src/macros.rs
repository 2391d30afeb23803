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
