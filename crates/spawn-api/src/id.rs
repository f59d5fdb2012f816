//! Names on the wire: who an actor is ([`ActorId`]) and where it listens ([`Addr`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An actor's identity: the name its parent gave it and a random 64-bit uid that makes
/// it unique within the tree (two children may share a name).
///
/// Displayed as `name@uid` with the uid in hex, the form [`RuntimeVars::parent_id`]
/// stores and [`FromStr`] parses.
///
/// [`RuntimeVars::parent_id`]: runtime_vars::RuntimeVars::parent_id
///
/// ```
/// use spawn_api::ActorId;
/// let id = ActorId::new("worker");
/// let back: ActorId = id.to_string().parse().unwrap();
/// assert_eq!(id, back);
/// assert_eq!(back.name(), "worker");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorId {
    name: String,
    uid: u64,
}

impl ActorId {
    /// A fresh id for an actor called `name`, with a random uid.
    pub fn new(name: impl Into<String>) -> ActorId {
        ActorId {
            name: name.into(),
            uid: random_u64(),
        }
    }

    /// An id with a chosen uid (tests and tools that need stable ids).
    pub fn with_uid(name: impl Into<String>, uid: u64) -> ActorId {
        ActorId {
            name: name.into(),
            uid,
        }
    }

    /// The name the parent gave this actor.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The random part of the id.
    pub fn uid(&self) -> u64 {
        self.uid
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{:016x}", self.name, self.uid)
    }
}

/// Returned when a string is not of the `name@hexuid` form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an actor id (expected name@hexuid): {0:?}")]
pub struct BadActorId(pub String);

impl FromStr for ActorId {
    type Err = BadActorId;

    fn from_str(s: &str) -> Result<ActorId, BadActorId> {
        let (name, uid) = s.rsplit_once('@').ok_or_else(|| BadActorId(s.to_owned()))?;
        let uid = u64::from_str_radix(uid, 16).map_err(|_| BadActorId(s.to_owned()))?;
        Ok(ActorId {
            name: name.to_owned(),
            uid,
        })
    }
}

/// Where an actor listens: a transport key and an endpoint that only that transport
/// interprets (for `uds`, a socket path).
///
/// Displayed as `transport:endpoint`, the form kept in [`runtime_vars::RuntimeVars`].
///
/// ```
/// use spawn_api::Addr;
/// let a: Addr = "uds:/tmp/brood-0/ab.sock".parse().unwrap();
/// assert_eq!(a.transport(), "uds");
/// assert_eq!(a.endpoint(), "/tmp/brood-0/ab.sock");
/// assert_eq!(a.to_string(), "uds:/tmp/brood-0/ab.sock");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Addr {
    transport: String,
    endpoint: String,
}

impl Addr {
    /// An address for transport `transport` at `endpoint`.
    pub fn new(transport: impl Into<String>, endpoint: impl Into<String>) -> Addr {
        Addr {
            transport: transport.into(),
            endpoint: endpoint.into(),
        }
    }

    /// The key of the transport this address belongs to.
    pub fn transport(&self) -> &str {
        &self.transport
    }

    /// The transport-specific part.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.endpoint)
    }
}

/// Returned when a string is not of the `transport:endpoint` form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an address (expected transport:endpoint): {0:?}")]
pub struct BadAddr(pub String);

impl FromStr for Addr {
    type Err = BadAddr;

    fn from_str(s: &str) -> Result<Addr, BadAddr> {
        match s.split_once(':') {
            Some((t, e)) if !t.is_empty() && !e.is_empty() => Ok(Addr::new(t, e)),
            _ => Err(BadAddr(s.to_owned())),
        }
    }
}

/// 64 random bits from the OS. Falls back to a time-and-pid mix if the OS source fails,
/// because an id collision is recoverable (a spawn fails) while a panic here is not.
pub(crate) fn random_u64() -> u64 {
    match getrandom::u64() {
        Ok(v) => v,
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_parse_back() {
        let a = ActorId::new("x@y");
        let b = ActorId::new("x@y");
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<ActorId>().unwrap(), a);
        assert!("nouid".parse::<ActorId>().is_err());
        assert!("n@zz".parse::<ActorId>().is_err());
    }

    #[test]
    fn addr_rejects_missing_parts() {
        assert!("uds".parse::<Addr>().is_err());
        assert!(":x".parse::<Addr>().is_err());
        assert!("uds:".parse::<Addr>().is_err());
        let a: Addr = "shm:/a:b".parse().unwrap();
        assert_eq!(a.endpoint(), "/a:b");
    }
}
