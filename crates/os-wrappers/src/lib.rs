//! # os-wrappers: the Linux system calls brood needs that std does not wrap
//!
//! Small, safe wrappers, each `unsafe` block with the reason it is sound and each call
//! exercised by a test on real processes:
//!
//! - [`pidfd`]: process handles that cannot be confused with another process (open,
//!   signal, signal the group, wait, reap, register with tokio);
//! - [`sigterm`]: the SIGTERM policy of a process actor (die when alone, tear the
//!   subtree down first when it has children).
//!
//! ## Who should depend on this crate
//!
//! brood's process backends (`spawn-proc`, `spawn-fork`) and its actor runtime
//! (`actor-core`). It sits below the contract (`spawn-api`) and knows nothing of actors:
//! what it returns is std's vocabulary (`OwnedFd`, `ExitStatus`, `io::Error`). Programs
//! never need it.

pub mod pidfd;
pub mod sigterm;

pub use pidfd::Pidfd;
