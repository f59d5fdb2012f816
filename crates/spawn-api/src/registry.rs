//! The functions an actor serves.
//!
//! A function is declared once as a type that names it and fixes its argument and
//! result types ([`Call`], [`ServerStream`], [`Context`]; the [`call!`](crate::call),
//! [`stream!`](crate::stream) and [`context!`](crate::context) macros write the impls),
//! registered with its handler in a [`Registry`], and invoked through a
//! [`Portal`](crate::Portal) by passing the same type. Both sides agree on the types at
//! compile time; on the wire the function is found by its name.
//!
//! ```
//! use spawn_api::{ActorCx, FnError, Registry, StreamTx};
//!
//! spawn_api::call!(pub Add: (i64, i64) => i64);
//! spawn_api::stream!(pub Count: u32 => u32);
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
//! assert!(registry.contains(<Add as spawn_api::Call>::NAME));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::actor::ActorCx;
use crate::conn::CallLink;
use crate::error::{FnError, kinds};
use crate::stream::{CalleeContext, StreamTx};
use crate::wire::{CallKind, Wire};

/// A one-shot function: arguments in, one reply out.
///
/// Implement it on a unit struct (or use [`call!`](crate::call)); pass the struct to
/// [`Registry::call`] and [`Portal::run`](crate::Portal::run).
pub trait Call: Send + Sync + 'static {
    /// The name the function is registered and called under.
    const NAME: &'static str;
    /// The arguments.
    type Args: Wire;
    /// The reply.
    type Reply: Wire;
}

/// A server-streaming function: arguments in, a stream of items out.
pub trait ServerStream: Send + Sync + 'static {
    /// The name the function is registered and called under.
    const NAME: &'static str;
    /// The arguments.
    type Args: Wire;
    /// The items the callee sends.
    type Item: Wire;
}

/// A bidirectional context (tractor's `open_context`): arguments in, a `started` value
/// out, then items both ways, then a result.
pub trait Context: Send + Sync + 'static {
    /// The name the function is registered and called under.
    const NAME: &'static str;
    /// The arguments.
    type Args: Wire;
    /// What the callee sends once it is ready.
    type Started: Wire;
    /// Items from the caller to the callee.
    type In: Wire;
    /// Items from the callee to the caller.
    type Out: Wire;
    /// The callee's final result.
    type Return: Wire;
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

type CallFn = Arc<dyn Fn(ActorCx, Bytes) -> BoxFuture<Result<Bytes, FnError>> + Send + Sync>;
type StreamFn =
    Arc<dyn Fn(ActorCx, Bytes, CallLink) -> BoxFuture<Result<(), FnError>> + Send + Sync>;
type ContextFn =
    Arc<dyn Fn(ActorCx, Bytes, CallLink) -> BoxFuture<Result<Bytes, FnError>> + Send + Sync>;

/// A registered handler with its types erased.
#[derive(Clone)]
pub(crate) enum Handler {
    Call(CallFn),
    Stream(StreamFn),
    Context(ContextFn),
}

impl Handler {
    pub(crate) fn kind(&self) -> CallKind {
        match self {
            Handler::Call(_) => CallKind::Call,
            Handler::Stream(_) => CallKind::Stream,
            Handler::Context(_) => CallKind::Context,
        }
    }
}

fn bad_args(e: crate::CodecError) -> FnError {
    FnError::new(kinds::BAD_ARGS, e.to_string())
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
        C: Call,
        F: Fn(ActorCx, C::Args) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C::Reply, FnError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: CallFn = Arc::new(move |cx, args| {
            let handler = handler.clone();
            Box::pin(async move {
                let args = C::Args::decode(args).map_err(bad_args)?;
                let reply = handler(cx, args).await?;
                reply.encode().map_err(FnError::from)
            })
        });
        self.insert(C::NAME, Handler::Call(erased))
    }

    /// Serve the streaming function `S` with `handler`, which sends items through its
    /// [`StreamTx`] and returns when the stream is complete.
    ///
    /// # Panics
    /// If a function named `S::NAME` is already registered.
    pub fn stream<S, F, Fut>(self, _function: S, handler: F) -> Registry
    where
        S: ServerStream,
        F: Fn(ActorCx, S::Args, StreamTx<S::Item>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), FnError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: StreamFn = Arc::new(move |cx, args, link| {
            let handler = handler.clone();
            Box::pin(async move {
                let args = S::Args::decode(args).map_err(bad_args)?;
                handler(cx, args, StreamTx::new(link)).await
            })
        });
        self.insert(S::NAME, Handler::Stream(erased))
    }

    /// Serve the context `C` with `handler`, which calls
    /// [`CalleeContext::started`] and then exchanges items until it returns.
    ///
    /// # Panics
    /// If a function named `C::NAME` is already registered.
    pub fn context<C, F, Fut>(self, _function: C, handler: F) -> Registry
    where
        C: Context,
        F: Fn(ActorCx, C::Args, CalleeContext<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C::Return, FnError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: ContextFn = Arc::new(move |cx, args, link| {
            let handler = handler.clone();
            Box::pin(async move {
                let args = C::Args::decode(args).map_err(bad_args)?;
                let ret = handler(cx, args, CalleeContext::new(link)).await?;
                ret.encode().map_err(FnError::from)
            })
        });
        self.insert(C::NAME, Handler::Context(erased))
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

/// Declare a one-shot function: `call!(pub Name: Args => Reply);`, optionally with an
/// explicit wire name: `call!(pub Name = "name": Args => Reply);`. The default wire name
/// is the module path and the type name.
///
/// ```
/// spawn_api::call!(
///     /// Adds two numbers.
///     pub Add: (i64, i64) => i64
/// );
/// spawn_api::call!(Ping = "ping": () => String);
/// assert!(<Add as spawn_api::Call>::NAME.ends_with("::Add"));
/// assert_eq!(<Ping as spawn_api::Call>::NAME, "ping");
/// ```
#[macro_export]
macro_rules! call {
    ($(#[$m:meta])* $vis:vis $name:ident $(= $wire:literal)? : $args:ty => $reply:ty) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $name;
        impl $crate::Call for $name {
            const NAME: &'static str =
                $crate::__wire_name!($($wire)? ; concat!(module_path!(), "::", stringify!($name)));
            type Args = $args;
            type Reply = $reply;
        }
    };
}

/// Declare a server-streaming function: `stream!(pub Name: Args => Item);`.
///
/// ```
/// spawn_api::stream!(pub Ticks: u32 => u64);
/// assert!(<Ticks as spawn_api::ServerStream>::NAME.ends_with("::Ticks"));
/// ```
#[macro_export]
macro_rules! stream {
    ($(#[$m:meta])* $vis:vis $name:ident $(= $wire:literal)? : $args:ty => $item:ty) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $name;
        impl $crate::ServerStream for $name {
            const NAME: &'static str =
                $crate::__wire_name!($($wire)? ; concat!(module_path!(), "::", stringify!($name)));
            type Args = $args;
            type Item = $item;
        }
    };
}

/// Declare a bidirectional context:
/// `context!(pub Name: Args => started S, in I, out O, return R);`.
///
/// ```
/// spawn_api::context!(pub Echo: u32 => started String, in String, out String, return u64);
/// assert!(<Echo as spawn_api::Context>::NAME.ends_with("::Echo"));
/// ```
#[macro_export]
macro_rules! context {
    ($(#[$m:meta])* $vis:vis $name:ident $(= $wire:literal)? : $args:ty
        => started $started:ty, in $in:ty, out $out:ty, return $ret:ty) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $name;
        impl $crate::Context for $name {
            const NAME: &'static str =
                $crate::__wire_name!($($wire)? ; concat!(module_path!(), "::", stringify!($name)));
            type Args = $args;
            type Started = $started;
            type In = $in;
            type Out = $out;
            type Return = $ret;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wire_name {
    ($wire:literal ; $default:expr) => {
        $wire
    };
    (; $default:expr) => {
        $default
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::call!(Add: (i64, i64) => i64);
    crate::call!(Other = "other": () => ());

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
        assert_eq!(r.get("other").unwrap().kind(), CallKind::Call);
        assert!(format!("{r:?}").contains("other"));
    }
}
