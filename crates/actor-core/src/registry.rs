//! The functions an actor serves.
//!
//! A function is declared once as a type that names it and fixes its argument and
//! result types ([`CallFn`], [`StreamFn`], [`ContextFn`]; the [`call!`](spawn_api::call),
//! [`stream!`](spawn_api::stream) and [`context!`](spawn_api::context) macros write the
//! impls), registered with its handler in a [`Registry`], and invoked through a
//! [`Portal`](crate::Portal) by passing the same type. Both sides agree on the types at
//! compile time; on the wire the function is found by its name.
//!
//! ```
//! use actor_core::{ActorCx, FnError, Registry, StreamTx};
//!
//! actor_core::call!(pub Add: (i64, i64) => i64);
//! actor_core::stream!(pub Count: u32 => u32);
//!
//! async fn count(_cx: ActorCx, n: u32, tx: StreamTx<u32>) -> Result<(), FnError> {
//!     for i in 0..n {
//!         tx.send(i).await?;
//!     }
//!     Ok(())
//! }
//!
//! let registry = Registry::new()
//!     .call(Add, |_cx, (a, b)| async move { Ok(a + b) })
//!     .stream(Count, count);
//! assert!(registry.contains(<Add as spawn_api::CallFn>::NAME));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::actor::{ActorCx, Body, CallHandler, ContextHandler, Handler, StreamHandler};
use crate::error::FnError;
use crate::stream::{CalleeContext, StreamTx};
use spawn_api::{CallFn, ContextFn, Payload, StreamFn, kinds};

/// Arguments that do not decode as `T`: the caller turns this into a typed
/// [`MsgTypeError`](crate::MsgTypeError) naming its own type beside ours.
fn bad_args<T>(function: &str, e: spawn_api::CodecError) -> FnError {
    FnError::new(
        kinds::BAD_ARGS,
        format!(
            "{function}: the arguments do not decode as {}: {e}",
            std::any::type_name::<T>()
        ),
    )
}

/// The named functions an actor serves. Every actor of a program serves the same
/// registry (children are the same program).
///
/// Building panics on a duplicate name: two handlers for one name is a programming
/// error that must not be resolved silently.
#[derive(Clone, Default)]
pub struct Registry {
    fns: BTreeMap<&'static str, Handler>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    fn insert(mut self, name: &'static str, h: Handler) -> Registry {
        if self.fns.insert(name, h).is_some() {
            panic!("brood registry: function {name:?} is registered twice");
        }
        self
    }

    /// Serve the one-shot function `C` with `handler`.
    ///
    /// # Panics
    /// If a function named `C::NAME` is already registered.
    pub fn call<C, F, Fut>(self, _function: C, handler: F) -> Registry
    where
        C: CallFn,
        F: Fn(ActorCx, C::Args) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C::Reply, FnError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: CallHandler = Arc::new(move |cx, args| {
            let handler = handler.clone();
            Box::pin(async move {
                let args = args
                    .decode::<C::Args>()
                    .map_err(|e| bad_args::<C::Args>(C::NAME, e))?;
                let reply = handler(cx, args).await?;
                Payload::encode(&reply).map_err(FnError::from)
            })
        });
        self.insert(C::NAME, Handler::new(Body::Call(erased), &C::types()))
    }

    /// Serve the streaming function `S` with `handler`, which sends items through its
    /// [`StreamTx`] and returns when the stream is complete.
    ///
    /// # Panics
    /// If a function named `S::NAME` is already registered.
    pub fn stream<S, F, Fut>(self, _function: S, handler: F) -> Registry
    where
        S: StreamFn,
        F: Fn(ActorCx, S::Args, StreamTx<S::Item>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), FnError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: StreamHandler = Arc::new(move |cx, args, link| {
            let handler = handler.clone();
            Box::pin(async move {
                let args = args
                    .decode::<S::Args>()
                    .map_err(|e| bad_args::<S::Args>(S::NAME, e))?;
                handler(cx, args, StreamTx::new(link)).await
            })
        });
        self.insert(S::NAME, Handler::new(Body::Stream(erased), &S::types()))
    }

    /// Serve the context `C` with `handler`, which calls
    /// [`CalleeContext::started`] and then exchanges items until it returns.
    ///
    /// # Panics
    /// If a function named `C::NAME` is already registered.
    pub fn context<C, F, Fut>(self, _function: C, handler: F) -> Registry
    where
        C: ContextFn,
        F: Fn(ActorCx, C::Args, CalleeContext<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C::Return, FnError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: ContextHandler = Arc::new(move |cx, args, link| {
            let handler = handler.clone();
            Box::pin(async move {
                let args = args
                    .decode::<C::Args>()
                    .map_err(|e| bad_args::<C::Args>(C::NAME, e))?;
                let ret = handler(cx, args, CalleeContext::new(link)).await?;
                Payload::encode(&ret).map_err(FnError::from)
            })
        });
        self.insert(C::NAME, Handler::new(Body::Context(erased), &C::types()))
    }

    /// Add every function of `other`.
    ///
    /// # Panics
    /// If both registries have a function of the same name.
    pub fn merge(mut self, other: Registry) -> Registry {
        for (name, h) in other.fns {
            self = self.insert(name, h);
        }
        self
    }

    /// Whether a function named `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.fns.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.fns.keys().copied()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Handler> {
        self.fns.get(name)
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.fns.iter().map(|(k, h)| (k, h.kind())))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    spawn_api::call!(Add: (i64, i64) => i64);
    spawn_api::call!(Other = "other": () => ());

    #[test]
    #[should_panic(expected = "registered twice")]
    fn duplicate_names_panic() {
        let _ = Registry::new()
            .call(Add, |_cx, (a, b)| async move { Ok(a + b) })
            .call(Add, |_cx, (a, b)| async move { Ok(a - b) });
    }

    #[test]
    fn names_and_kinds_are_listed() {
        let r = Registry::new()
            .call(Add, |_cx, (a, b)| async move { Ok(a + b) })
            .merge(Registry::new().call(Other, |_cx, ()| async move { Ok(()) }));
        let names: Vec<_> = r.names().collect();
        assert_eq!(names.len(), 2);
        assert!(r.contains("other"));
        assert_eq!(r.get("other").unwrap().kind(), spawn_api::CallKind::Call);
        assert!(format!("{r:?}").contains("other"));
    }
}
