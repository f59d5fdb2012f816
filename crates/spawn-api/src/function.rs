//! How a function an actor serves is named and typed.
//!
//! A function is declared once as a type that names it and fixes its argument and
//! result types ([`CallFn`], [`StreamFn`], [`ContextFn`]; the [`call!`](crate::call),
//! [`stream!`](crate::stream) and [`context!`](crate::context) macros write the impls).
//! The actor runtime registers a handler under that type and invokes it through a portal
//! by passing the same type, so both sides agree on the types at compile time; on the
//! wire the function is found by its name and its values travel as [`Wire`] encodings.
//!
//! ```
//! spawn_api::call!(pub Add: (i64, i64) => i64);
//! spawn_api::stream!(pub Count: u32 => u32);
//! spawn_api::context!(pub Chat: () => started (), in String, out String, return ());
//! assert!(<Add as spawn_api::CallFn>::NAME.ends_with("::Add"));
//! ```

use std::any::type_name;

use crate::wire::{Signature, Wire};

/// A one-shot function: arguments in, one reply out.
///
/// Implement it on a unit struct (or use [`call!`](crate::call)); pass the struct to
/// the runtime's `Registry::call` and `Portal::run`.
pub trait CallFn: Send + Sync + 'static {
    /// The name the function is registered and called under.
    const NAME: &'static str;
    /// The arguments.
    type Args: Wire;
    /// The reply.
    type Reply: Wire;

    /// The type names, `[args, reply]`.
    fn types() -> [&'static str; 2] {
        [type_name::<Self::Args>(), type_name::<Self::Reply>()]
    }

    /// The function's [`Signature`].
    fn signature() -> Signature {
        Signature::new(&Self::types())
    }
}

/// A server-streaming function: arguments in, a stream of items out.
pub trait StreamFn: Send + Sync + 'static {
    /// The name the function is registered and called under.
    const NAME: &'static str;
    /// The arguments.
    type Args: Wire;
    /// The items the callee sends.
    type Item: Wire;

    /// The type names, `[args, item]`.
    fn types() -> [&'static str; 2] {
        [type_name::<Self::Args>(), type_name::<Self::Item>()]
    }

    /// The function's [`Signature`].
    fn signature() -> Signature {
        Signature::new(&Self::types())
    }
}

/// A bidirectional context (tractor's `open_context`): arguments in, a `started` value
/// out, then items both ways, then a result.
pub trait ContextFn: Send + Sync + 'static {
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

    /// The type names, `[args, started, in, out, return]`.
    fn types() -> [&'static str; 5] {
        [
            type_name::<Self::Args>(),
            type_name::<Self::Started>(),
            type_name::<Self::In>(),
            type_name::<Self::Out>(),
            type_name::<Self::Return>(),
        ]
    }

    /// The function's [`Signature`].
    fn signature() -> Signature {
        Signature::new(&Self::types())
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
/// assert!(<Add as spawn_api::CallFn>::NAME.ends_with("::Add"));
/// assert_eq!(<Ping as spawn_api::CallFn>::NAME, "ping");
/// ```
#[macro_export]
macro_rules! call {
    ($(#[$m:meta])* $vis:vis $name:ident $(= $wire:literal)? : $args:ty => $reply:ty) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $name;
        impl $crate::CallFn for $name {
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
/// assert!(<Ticks as spawn_api::StreamFn>::NAME.ends_with("::Ticks"));
/// ```
#[macro_export]
macro_rules! stream {
    ($(#[$m:meta])* $vis:vis $name:ident $(= $wire:literal)? : $args:ty => $item:ty) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $name;
        impl $crate::StreamFn for $name {
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
/// assert!(<Echo as spawn_api::ContextFn>::NAME.ends_with("::Echo"));
/// ```
#[macro_export]
macro_rules! context {
    ($(#[$m:meta])* $vis:vis $name:ident $(= $wire:literal)? : $args:ty
        => started $started:ty, in $in:ty, out $out:ty, return $ret:ty) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $name;
        impl $crate::ContextFn for $name {
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
