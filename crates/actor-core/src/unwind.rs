//! Catching panics in actor code and remembering where they happened.
//!
//! A panicking handler must not take the whole actor runtime down uncontrolled: the
//! actor reports the panic (message and location) to its caller and its parent, then
//! ends with a panic exit. [`CatchUnwind`] turns a panic during a poll into a value;
//! the panic hook installed by [`install_location_hook`] records the location on the
//! panicking thread, because the panic payload does not carry it.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install (once per process) a panic hook that records each panic's location on the
/// panicking thread, then runs the hook that was installed before it.
pub(crate) fn install_location_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(loc) = info.location() {
                let text = format!("{}:{}:{}", loc.file(), loc.line(), loc.column());
                LAST_LOCATION.with(|l| *l.borrow_mut() = Some(text));
            }
            previous(info);
        }));
    });
}

/// A caught panic: its message and, if the hook saw it, its location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Panic {
    pub message: String,
    pub location: Option<String>,
}

impl Panic {
    fn from_payload(payload: Box<dyn Any + Send>) -> Panic {
        let message = spawn_api::panic_message(&*payload);
        let location = LAST_LOCATION.with(|l| l.borrow_mut().take());
        Panic { message, location }
    }
}

pin_project_lite::pin_project! {
    /// Polls the inner future inside `catch_unwind`.
    pub(crate) struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        CatchUnwind { inner }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Panic>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        // The future is never polled again after a panic (we return Ready), so broken
        // invariants inside it cannot be observed: asserting unwind safety is sound.
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(Panic::from_payload(payload))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_values_with_location() {
        install_location_hook();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(CatchUnwind::new(async {
            if std::hint::black_box(true) {
                panic!("boom {}", 7);
            }
            1
        }));
        let p = r.unwrap_err();
        assert_eq!(p.message, "boom 7");
        assert!(p.location.unwrap().contains("unwind.rs"));
        assert_eq!(rt.block_on(CatchUnwind::new(async { 5 })), Ok(5));
    }
}
