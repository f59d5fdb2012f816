//! # os-wrappers: the Linux system calls brood needs that std does not wrap
//!
//! Small, safe wrappers, each `unsafe` block with the reason it is sound and each call
//! exercised by a test on real processes and descriptors:
//!
//! - [`pidfd`]: process handles that cannot be confused with another process (open,
//!   signal, signal the group, wait, reap, register with tokio);
//! - [`sigterm`]: the SIGTERM policy of a process actor (die when alone, tear the
//!   subtree down first when it has children);
//! - [`runtime_dir`]: the private runtime directory of the socket-based transports
//!   (every path component checked, a fresh private directory when the default one is
//!   squatted) and the per-tree directories below it;
//! - [`peercred`]: a Unix socket peer's credentials (`SO_PEERCRED`) and the same-user
//!   check;
//! - [`socket_file`]: a Unix listener at a path, its socket file removed with it;
//! - [`fdpass`]: passing descriptors over a Unix socket (`SCM_RIGHTS`);
//! - [`memfd`], [`mmap`], [`eventfd`]: anonymous sealed memory files, shared mappings of
//!   them, and event counters used as doorbells (the shared-memory transport's pieces);
//! - [`tty`]: the controlling terminal, and holding its signal keys while a debugger
//!   prompt reads it;
//! - [`secret_file`]: a secret in a file only its owner may read (how the programs of
//!   one registrar share their key);
//! - [`title`]: process titles, the command name and command line `ps` and `top` show.
//!
//! ## Who should depend on this crate
//!
//! brood's process backends (`spawn-proc`, `spawn-fork`), its transports (`ipc-uds`,
//! `ipc-shm`) and its actor runtime (`actor-core`). It sits below the contract
//! (`spawn-api`) and knows nothing of actors: what it returns is std's vocabulary
//! (`OwnedFd`, `ExitStatus`, `io::Error`, paths) and a few plain data types of its own.
//! Programs never need it.

pub mod eventfd;
pub mod fdpass;
pub mod memfd;
pub mod mmap;
pub mod peercred;
pub mod pidfd;
pub mod runtime_dir;
pub mod secret_file;
pub mod sigterm;
pub mod socket_file;
pub mod title;
pub mod tty;

pub use pidfd::Pidfd;
