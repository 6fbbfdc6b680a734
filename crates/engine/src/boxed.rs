//! Boxing large futures without copying them.
//!
//! `Box::pin(make())` evaluates `make()` before it allocates, so the value is built on the stack
//! and then copied into the heap: for a request's future, several KiB per request. Allocating
//! first and building into the allocation lets the compiler write the value in place.

use std::future::Future;
use std::pin::Pin;

/// `Box::pin(make())`, built in place.
#[inline(always)]
pub(crate) fn pin_in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let slot = Box::new_uninit();
    Pin::from(Box::write(slot, make()))
}
