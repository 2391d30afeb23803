//! Locks that go on after a panic: a thread that panicked while holding one of the crate's
//! locks left its data consistent (every critical section of the crate is a handful of
//! assignments that cannot fail halfway), so the next holder takes it as it is rather than
//! panicking in turn and taking the server down.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] without the poisoning.
pub(crate) trait MutexExt<T> {
    /// Locks, whether or not a holder panicked.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> MutexExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`] without the poisoning.
pub(crate) trait RwLockExt<T> {
    /// Locks for reading, whether or not a writer panicked.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;

    /// Locks for writing, whether or not a writer panicked.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> RwLockExt<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_whose_holder_panicked_is_taken_as_it_is() {
        let mutex = std::sync::Arc::new(Mutex::new(1));
        let lock = std::sync::Arc::new(RwLock::new(1));
        let (m, l) = (mutex.clone(), lock.clone());
        let panicked = std::thread::spawn(move || {
            let (_m, mut l) = (m.lock().unwrap(), l.write().unwrap());
            *l = 2;
            panic!("a holder panics");
        })
        .join();
        assert!(panicked.is_err());
        assert!(mutex.is_poisoned() && lock.is_poisoned());
        assert_eq!(*mutex.locked(), 1);
        assert_eq!(*lock.read_locked(), 2);
        *lock.write_locked() = 3;
        assert_eq!(*lock.read_locked(), 3);
    }
}
