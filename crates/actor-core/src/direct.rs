//! Direct portals: a channel from this actor to any actor of its tree whose address it
//! knows, not only its parent and children.
//!
//! The channel is opened on the transport the address names, with the same checks as
//! every other: the transport's (the peer's uid, `SO_PEERCRED`) and the handshake's (both
//! sides prove they know the tree's secret, so an actor of another tree, or a process
//! that merely found the socket, is refused). The peer serves this channel as it serves
//! any peer's: calls, streams and contexts as with a child; it counts against its
//! [`max_peer_connections`](spawn_api::ChannelLimits::max_peer_connections) and closes it
//! after [`idle_timeout`](spawn_api::ChannelLimits::idle_timeout) without an open call,
//! after which calls fail with [`PortalError::Disconnected`](crate::PortalError) and a
//! new [`ActorCx::connect`] opens another. The peer's death ends the channel at once:
//! calls in flight get `Disconnected`, never a hang.

use std::sync::atomic::Ordering;

use spawn_api::{Addr, RemoteError, TransportError};

use crate::actor::{ActorCx, HANDSHAKE_TIMEOUT};
use crate::conn::{Conn, Peer, Side};
use crate::handshake::{self, HandshakeError, Handshaken};
use crate::portal::Portal;

/// Why [`ActorCx::connect`] could not open a portal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address names a transport this program was not built with.
    #[error("no transport {key:?} in this program to reach {addr}")]
    NoTransport {
        /// The address.
        addr: String,
        /// Its transport's key.
        key: String,
    },
    /// The transport could not open a channel (nobody listens there, another user's
    /// socket, a broken setup).
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        /// The address.
        addr: String,
        /// The transport's error.
        #[source]
        source: TransportError,
    },
    /// The actor there refused the channel (it has too many peers, say), with its reason.
    #[error("{addr} refused the channel: {error}")]
    Refused {
        /// The address.
        addr: String,
        /// Its reason.
        error: Box<RemoteError>,
    },
    /// The handshake failed: the peer is not of this tree (it did not prove the tree's
    /// secret), broke the protocol, or did not answer in time.
    #[error("handshake with {addr} failed: {reason}")]
    Handshake {
        /// The address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// This actor already holds as many peer channels as its limits allow.
    #[error("actor {actor} already has {limit} peer channels open")]
    TooManyConnections {
        /// This actor's tree path.
        actor: String,
        /// The limit.
        limit: u32,
    },
    /// This actor is shutting down.
    #[error("actor {0} is shutting down")]
    ShuttingDown(String),
}

impl ActorCx {
    /// Open a portal straight to the actor listening at `addr` (an actor of this tree:
    /// a sibling, a cousin, the root), not relayed through parents. The channel is
    /// checked as every other (the peer's uid, the tree's secret) and lives until the
    /// peer's idle timeout or [`Portal::close`]; to find an actor by name and reuse one
    /// channel per target, see [`ActorCx::find_actor`].
    ///
    /// ```no_run
    /// # async fn demo(cx: actor_core::ActorCx, sibling: spawn_api::Addr) -> Result<(), Box<dyn std::error::Error>> {
    /// actor_core::call!(Add: (i64, i64) => i64);
    /// let portal = cx.connect(&sibling).await?;
    /// assert_eq!(portal.run(Add, (1, 2)).await?, 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it returns, whatever it opened is closed (the peer
    /// sees a channel that ends during or right after its handshake).
    ///
    /// # Errors
    /// See [`ConnectError`]: an unknown transport, an unreachable address, a refusal, a
    /// failed handshake, too many peer channels, or this actor shutting down.
    pub async fn connect(&self, addr: &Addr) -> Result<Portal, ConnectError> {
        self.connect_as(addr, None).await
    }

    /// [`connect`](Self::connect), the peer known by its tree path `path` when the
    /// caller knows it (a lookup's answer); otherwise by its id.
    pub(crate) async fn connect_as(
        &self,
        addr: &Addr,
        path: Option<&str>,
    ) -> Result<Portal, ConnectError> {
        let inner = &self.inner;
        let shown = addr.to_string();
        if inner.io_stop.is_cancelled() {
            return Err(ConnectError::ShuttingDown(inner.path.clone()));
        }
        let transport =
            inner
                .program
                .transport(addr.transport())
                .map_err(|_| ConnectError::NoTransport {
                    addr: shown.clone(),
                    key: addr.transport().to_owned(),
                })?;
        let ch = transport
            .connect(addr)
            .await
            .map_err(|source| ConnectError::Unreachable {
                addr: shown.clone(),
                source,
            })?;
        let hs = handshake::connect(ch, &inner.id, &inner.secret, None, None, HANDSHAKE_TIMEOUT)
            .await
            .map_err(|e| match e {
                HandshakeError::Refused(error) => ConnectError::Refused {
                    addr: shown.clone(),
                    error,
                },
                other => ConnectError::Handshake {
                    addr: shown.clone(),
                    reason: other.to_string(),
                },
            })?;
        // Counted as the channels peers open to us are (and released the same way, when
        // its reader ends): the limit bounds what this actor holds, whoever opened it.
        let limit = inner.limits.max_peer_connections;
        if inner.peer_conns.fetch_add(1, Ordering::Relaxed) >= limit as usize {
            inner.peer_conns.fetch_sub(1, Ordering::Relaxed);
            return Err(ConnectError::TooManyConnections {
                actor: inner.path.clone(),
                limit,
            });
        }
        let Handshaken {
            peer,
            peer_info,
            sink,
            source,
        } = hs;
        tracing::debug!(%peer, addr = %shown, "opened a direct channel");
        let path = path.map_or_else(|| peer.to_string(), str::to_owned);
        let conn = Conn::start(
            inner.clone(),
            peer,
            path,
            peer_info,
            Peer::Other,
            sink,
            source,
            Side::Connector,
            transport.max_frame(),
        );
        Ok(Portal::new(conn, None, inner.policy))
    }
}
