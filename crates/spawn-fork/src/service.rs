//! The value recorded under [`SERVICE_KEY`](crate::SERVICE_KEY): where a descendant finds
//! the tree's forkserver, and how it recognises it.
//!
//! An abstract socket name proves nothing: anyone in the network namespace can bind it
//! once the server is gone. So the value also names the two processes a client checks:
//! the *owner* (the actor that created, bound and listened the socket, whose credentials
//! the kernel reports for every connection to it) and the *server* (the OS parent of every
//! child it forks).

use std::fmt;
use std::str::FromStr;

/// The first token of every value. A change of fields gets a new tag: a value of another
/// version is refused rather than half understood.
const VERSION: &str = "brood-fork/1";

/// The longest abstract socket name: `sun_path` holds 108 bytes, the first of which is the
/// NUL that makes the name abstract.
const MAX_NAME: usize = 107;

/// The longest value looked at; a longer one is refused before it is split.
const MAX_VALUE: usize = 256;

/// Where a tree's forkserver listens and who it must be: the value a spawning actor
/// records under [`SERVICE_KEY`](crate::SERVICE_KEY) in its children's runtime vars.
///
/// Encoded as `brood-fork/1 owner=<pid> server=<pid> name=<abstract socket name>`; the
/// decoder is strict (fields in that order, plain decimal pids, a name of printable ASCII)
/// and fails with a [`ServiceError`], never a panic.
///
/// ```
/// use spawn_fork::ForkService;
/// let s = ForkService {
///     name: "brood-fork/41/0/0000abcd".to_owned(),
///     owner_pid: 41,
///     server_pid: 42,
/// };
/// let text = s.to_string();
/// assert_eq!(text, "brood-fork/1 owner=41 server=42 name=brood-fork/41/0/0000abcd");
/// assert_eq!(text.parse::<ForkService>(), Ok(s));
/// assert!("brood-fork/41/0/0000abcd".parse::<ForkService>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkService {
    /// The name of the server's abstract Unix socket (without the leading NUL).
    pub name: String,
    /// The process of the actor that started the server. It created, bound and listened
    /// the socket before handing it over, and Linux reports for a connection the
    /// credentials captured by `listen()`: a connecting client must see this pid.
    pub owner_pid: u32,
    /// The server process, which forks (and so is the OS parent of) every child.
    pub server_pid: u32,
}

/// Why a [`ForkService`] value did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceError {
    /// The value is longer than any this crate writes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The value is not of the version this crate speaks (or is not a versioned value).
    Version {
        /// The first token found (at most 32 characters of it).
        found: String,
    },
    /// A field is missing or out of place.
    Field {
        /// The field expected there.
        expected: &'static str,
    },
    /// A pid is not a decimal number in `1..=i32::MAX`.
    Pid {
        /// The field.
        field: &'static str,
    },
    /// The socket name is empty, too long, or not printable ASCII.
    Name {
        /// What is wrong with it.
        why: &'static str,
    },
    /// Something follows the last field.
    Trailing,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::TooLong { len } => {
                write!(f, "the value is {len} bytes long (at most {MAX_VALUE})")
            }
            ServiceError::Version { found } => {
                write!(f, "version {found:?} is not the supported {VERSION:?}")
            }
            ServiceError::Field { expected } => write!(f, "expected the field {expected}="),
            ServiceError::Pid { field } => {
                write!(f, "{field}= is not a pid (decimal, 1 to 2147483647)")
            }
            ServiceError::Name { why } => write!(f, "bad socket name: {why}"),
            ServiceError::Trailing => f.write_str("unexpected text after the last field"),
        }
    }
}

impl std::error::Error for ServiceError {}

impl ForkService {
    /// Decode a value written by [`Display`](fmt::Display).
    ///
    /// # Errors
    /// A [`ServiceError`] saying what is wrong.
    pub fn parse(s: &str) -> Result<ForkService, ServiceError> {
        if s.len() > MAX_VALUE {
            return Err(ServiceError::TooLong { len: s.len() });
        }
        let mut it = s.split(' ');
        let version = it.next().unwrap_or_default();
        if version != VERSION {
            return Err(ServiceError::Version {
                found: version.chars().take(32).collect(),
            });
        }
        let owner_pid = pid_field(it.next(), "owner")?;
        let server_pid = pid_field(it.next(), "server")?;
        let name = field(it.next(), "name")?;
        check_name(name)?;
        if it.next().is_some() {
            return Err(ServiceError::Trailing);
        }
        Ok(ForkService {
            name: name.to_owned(),
            owner_pid,
            server_pid,
        })
    }
}

fn field<'a>(token: Option<&'a str>, key: &'static str) -> Result<&'a str, ServiceError> {
    token
        .and_then(|t| t.strip_prefix(key))
        .and_then(|t| t.strip_prefix('='))
        .ok_or(ServiceError::Field { expected: key })
}

fn pid_field(token: Option<&str>, key: &'static str) -> Result<u32, ServiceError> {
    let v = field(token, key)?;
    let bad = ServiceError::Pid { field: key };
    // `u32::from_str` also takes a sign; a pid is written as plain digits.
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    match v.parse::<u32>() {
        Ok(n) if n > 0 && i32::try_from(n).is_ok() => Ok(n),
        _ => Err(bad),
    }
}

fn check_name(name: &str) -> Result<(), ServiceError> {
    let why = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME {
        "longer than an abstract socket name can be"
    } else if !name.bytes().all(|b| b.is_ascii_graphic()) {
        "not printable ASCII"
    } else {
        return Ok(());
    };
    Err(ServiceError::Name { why })
}

impl fmt::Display for ForkService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERSION} owner={} server={} name={}",
            self.owner_pid, self.server_pid, self.name
        )
    }
}

impl FromStr for ForkService {
    type Err = ServiceError;

    fn from_str(s: &str) -> Result<ForkService, ServiceError> {
        ForkService::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ForkService {
        ForkService {
            name: "brood-fork/7/0/00c0ffee".to_owned(),
            owner_pid: 7,
            server_pid: 8,
        }
    }

    #[test]
    fn a_value_round_trips() {
        let s = sample();
        assert_eq!(ForkService::parse(&s.to_string()), Ok(s));
    }

    #[test]
    fn hostile_values_are_refused_with_a_reason() {
        let long = format!("{VERSION} owner=1 server=2 name={}", "x".repeat(300));
        let name_108 = format!("{VERSION} owner=1 server=2 name={}", "x".repeat(108));
        let cases: &[(&str, ServiceError)] = &[
            (
                "",
                ServiceError::Version {
                    found: String::new(),
                },
            ),
            (
                "brood-fork/7/0/00c0ffee",
                ServiceError::Version {
                    found: "brood-fork/7/0/00c0ffee".into(),
                },
            ),
            (
                "brood-fork/2 owner=1 server=2 name=n",
                ServiceError::Version {
                    found: "brood-fork/2".into(),
                },
            ),
            ("brood-fork/1", ServiceError::Field { expected: "owner" }),
            (
                "brood-fork/1 server=2 owner=1 name=n",
                ServiceError::Field { expected: "owner" },
            ),
            (
                "brood-fork/1  owner=1 server=2 name=n",
                ServiceError::Field { expected: "owner" },
            ),
            (
                "brood-fork/1 owner=1",
                ServiceError::Field { expected: "server" },
            ),
            (
                "brood-fork/1 owner=1 server=2",
                ServiceError::Field { expected: "name" },
            ),
            (
                "brood-fork/1 owner=1 server=2 name",
                ServiceError::Field { expected: "name" },
            ),
            (
                "brood-fork/1 owner=0 server=2 name=n",
                ServiceError::Pid { field: "owner" },
            ),
            (
                "brood-fork/1 owner=+1 server=2 name=n",
                ServiceError::Pid { field: "owner" },
            ),
            (
                "brood-fork/1 owner=-1 server=2 name=n",
                ServiceError::Pid { field: "owner" },
            ),
            (
                "brood-fork/1 owner=1 server=2147483648 name=n",
                ServiceError::Pid { field: "server" },
            ),
            (
                "brood-fork/1 owner=1 server=99999999999999999999 name=n",
                ServiceError::Pid { field: "server" },
            ),
            (
                "brood-fork/1 owner=1 server= name=n",
                ServiceError::Pid { field: "server" },
            ),
            (
                "brood-fork/1 owner=1 server=2 name=",
                ServiceError::Name { why: "empty" },
            ),
            (
                "brood-fork/1 owner=1 server=2 name=a\u{0}b",
                ServiceError::Name {
                    why: "not printable ASCII",
                },
            ),
            (
                "brood-fork/1 owner=1 server=2 name=é",
                ServiceError::Name {
                    why: "not printable ASCII",
                },
            ),
            (
                &name_108,
                ServiceError::Name {
                    why: "longer than an abstract socket name can be",
                },
            ),
            (
                "brood-fork/1 owner=1 server=2 name=n x",
                ServiceError::Trailing,
            ),
            (
                "brood-fork/1 owner=1 server=2 name=n ",
                ServiceError::Trailing,
            ),
            (&long, ServiceError::TooLong { len: long.len() }),
        ];
        for (text, want) in cases {
            assert_eq!(ForkService::parse(text).as_ref(), Err(want), "{text:?}");
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn the_version_found_is_bounded() {
        let e = ForkService::parse(&"v".repeat(200)).unwrap_err();
        assert_eq!(
            e,
            ServiceError::Version {
                found: "v".repeat(32)
            }
        );
    }
}
