//! How many pre-forked children the forkserver keeps waiting: the option, its bounds, and
//! how a value from the environment is judged.
//!
//! The server itself (its idle children, how one is handed a request) is in `server`;
//! this module only decides the number, on the side of the process that starts the server.

use std::ffi::OsStr;
use std::fmt;

/// The most idle children a forkserver keeps. Each is a process holding a copy of the
/// server's (small) memory and a slot in the user's process limit; more than a few only
/// help bursts of spawns, which fall back to forking on request once the pool is empty.
///
/// ```
/// assert_eq!(spawn_fork::MAX_POOL, 64);
/// assert!(spawn_fork::ForkBackend::new().with_pool(spawn_fork::MAX_POOL).is_ok());
/// ```
pub const MAX_POOL: usize = 64;

/// How many idle children a forkserver keeps when neither
/// [`ForkBackend::with_pool`](crate::ForkBackend::with_pool) nor [`POOL_ENV`] says: enough
/// for a spawn and the next one while the first is replaced.
///
/// ```
/// assert_eq!(spawn_fork::DEFAULT_POOL, 2);
/// ```
pub const DEFAULT_POOL: usize = 2;

/// Environment variable read by the actor that starts a tree's forkserver, when its
/// [`ForkBackend`](crate::ForkBackend) was given no
/// [`with_pool`](crate::ForkBackend::with_pool): how many pre-forked children the server
/// keeps (`0` to [`MAX_POOL`]; `0` forks every child on request). Anything else fails the
/// server's start, and so the spawn, with [`PoolError::BadEnv`] in its reason.
///
/// ```
/// assert_eq!(spawn_fork::POOL_ENV, "BROOD_FORK_POOL");
/// ```
pub const POOL_ENV: &str = "BROOD_FORK_POOL";

/// Why a pool size was refused.
///
/// ```
/// use spawn_fork::{ForkBackend, PoolError};
/// let e = ForkBackend::new().with_pool(65).unwrap_err();
/// assert_eq!(e, PoolError::TooLarge { asked: 65 });
/// assert!(e.to_string().contains("at most 64"), "{e}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// More idle children than [`MAX_POOL`].
    TooLarge {
        /// The size asked for.
        asked: usize,
    },
    /// [`POOL_ENV`] is set to something other than a whole number from 0 to
    /// [`MAX_POOL`].
    BadEnv {
        /// What it holds (lossily decoded, at most 32 characters of it).
        value: String,
    },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::TooLarge { asked } => write!(
                f,
                "a forkserver pool of {asked} idle children: at most {MAX_POOL} are allowed"
            ),
            PoolError::BadEnv { value } => write!(
                f,
                "{POOL_ENV}={value:?}: expected a whole number of idle children from 0 to \
                 {MAX_POOL}"
            ),
        }
    }
}

impl std::error::Error for PoolError {}

/// `asked`, if it is within [`MAX_POOL`].
pub(crate) fn checked(asked: usize) -> Result<usize, PoolError> {
    if asked > MAX_POOL {
        return Err(PoolError::TooLarge { asked });
    }
    Ok(asked)
}

/// The pool size a value of [`POOL_ENV`] asks for (`None`: not set, [`DEFAULT_POOL`]).
/// Plain digits only, as for every number this crate decodes: no sign, no spaces.
pub(crate) fn from_env_value(value: Option<&OsStr>) -> Result<usize, PoolError> {
    let Some(value) = value else {
        return Ok(DEFAULT_POOL);
    };
    let bad = || PoolError::BadEnv {
        value: value.to_string_lossy().chars().take(32).collect(),
    };
    let text = value.to_str().ok_or_else(bad)?;
    // At most two digits make a valid size; a longer run of zeros is still refused,
    // which keeps the parse from ever overflowing.
    if text.is_empty() || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: usize = text.parse().map_err(|_| bad())?;
    checked(n).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_within_the_bound_are_taken() {
        assert_eq!(checked(0), Ok(0));
        assert_eq!(checked(MAX_POOL), Ok(MAX_POOL));
        assert_eq!(
            checked(MAX_POOL + 1),
            Err(PoolError::TooLarge {
                asked: MAX_POOL + 1
            })
        );
        assert_eq!(
            checked(usize::MAX),
            Err(PoolError::TooLarge { asked: usize::MAX })
        );
    }

    #[test]
    fn the_environment_value_is_a_plain_bounded_number() {
        let env = |s: &str| from_env_value(Some(OsStr::new(s)));
        assert_eq!(from_env_value(None), Ok(DEFAULT_POOL), "unset: the default");
        assert_eq!(env("0"), Ok(0));
        assert_eq!(env("7"), Ok(7));
        assert_eq!(env("64"), Ok(64));
        assert_eq!(env("09"), Ok(9));
        for bad in [
            "", " 2", "2 ", "+2", "-1", "65", "99", "100", "0002", "two", "2.0", "१", "\u{0}",
        ] {
            match env(bad) {
                Err(PoolError::BadEnv { value }) => assert_eq!(value, bad, "shown as it was"),
                other => panic!("{bad:?}: expected BadEnv, got {other:?}"),
            }
        }
        let long = "9".repeat(1000);
        match env(&long) {
            Err(PoolError::BadEnv { value }) => assert_eq!(value.len(), 32, "cut"),
            other => panic!("expected BadEnv, got {other:?}"),
        }
        let not_utf8 = std::os::unix::ffi::OsStrExt::from_bytes(b"2\xff");
        assert!(matches!(
            from_env_value(Some(not_utf8)),
            Err(PoolError::BadEnv { .. })
        ));
        let e = env("lots").unwrap_err().to_string();
        assert!(
            e.contains("BROOD_FORK_POOL=\"lots\"") && e.contains("0 to 64"),
            "{e}"
        );
    }
}
