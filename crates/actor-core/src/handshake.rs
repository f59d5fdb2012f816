//! The handshake that opens every channel: who is at each end, which protocol, and proof
//! on both sides that they belong to the same tree.
//!
//! ```text
//! connector                                   acceptor
//!   Hello { id, protocol, nonce_c }      ->
//!                                        <-   Challenge { id, protocol, nonce_a, proof_a }
//!   (checks proof_a)
//!   Answer { proof_c }                   ->
//!                                             (checks proof_c; only then serves)
//! ```
//!
//! A new child knows its parent's nonce in advance (from its boot, which reached it by a
//! private path, and which is good for that one handshake), so it proves itself at once
//! and the spawn costs one round trip:
//!
//! ```text
//! child                                       parent
//!   Hello { id, protocol, nonce_c, proof_c } ->  (checks proof_c over its boot nonce)
//!                                        <-   Challenge { .., nonce_a, proof_a } + SpawnSpec
//!   (checks nonce_a is its boot's, and proof_a)
//! ```
//!
//! Each proof is a keyed hash of both nonces, both ids and the prover's role under the
//! tree's secret ([`TreeSecret`]): a peer that does not know the secret can neither
//! answer nor replay, and the secret never crosses the channel. A failed check is a
//! typed refusal sent to the peer ([`kinds::UNAUTHENTICATED`]) before the channel
//! closes; nothing else is read from a peer that has not proved itself.

use spawn_api::{
    ActorId, Channel, ChannelError, Frame, FrameSink, FrameSource, Msg, Nonce, PROTOCOL_VERSION,
    PeerInfo, ProofRole as Role, ProtocolError, RemoteError, TreeSecret, kinds,
};
use std::time::Duration;

/// What an acceptor knows in advance about the peers it waits for: the nonce it gave a
/// new child in its boot, by the child's id.
pub(crate) type Expected<'a> = &'a (dyn Fn(&ActorId) -> Option<Nonce> + Send + Sync);

/// A channel whose handshake is done.
pub(crate) struct Handshaken {
    /// The id the peer proved it holds the tree's secret under.
    pub(crate) peer: ActorId,
    pub(crate) peer_info: PeerInfo,
    pub(crate) sink: Box<dyn FrameSink>,
    pub(crate) source: Box<dyn FrameSource>,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The peer broke the protocol (or speaks another version).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The peer's proof is wrong: it does not know the tree's secret.
    #[error("the peer {0} did not prove it belongs to this tree")]
    Unauthenticated(String),
    /// The peer refused us, with its reason.
    #[error("refused by the peer: {0}")]
    Refused(Box<RemoteError>),
    /// The channel failed or closed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The peer answered as another actor than expected.
    #[error("expected {expected}, {got} answered")]
    WrongPeer {
        /// Who we meant to reach.
        expected: ActorId,
        /// Who answered.
        got: ActorId,
    },
}

async fn next(source: &mut dyn FrameSource, timeout: Duration) -> Result<Frame, HandshakeError> {
    match tokio::time::timeout(timeout, source.recv()).await {
        Ok(Ok(Some(f))) => Ok(f),
        Ok(Ok(None)) => Err(ChannelError::Closed.into()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ProtocolError::HandshakeTimeout(timeout).into()),
    }
}

fn check_version(protocol: u32) -> Result<(), HandshakeError> {
    if protocol == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ProtocolError::Version {
            ours: PROTOCOL_VERSION,
            theirs: protocol,
        }
        .into())
    }
}

/// Open a handshake on a channel we connected: prove ourselves as `me` and check the
/// peer's proof (and, with `expect`, that it is that actor). The whole exchange is
/// bounded by `timeout`.
///
/// A new child passes its parent as `expect` and the nonce from its boot as
/// `boot_nonce`: it proves itself in its `Hello`, and the exchange is one round trip.
pub(crate) async fn connect(
    ch: Box<dyn Channel>,
    me: &ActorId,
    secret: &TreeSecret,
    expect: Option<&ActorId>,
    boot_nonce: Option<Nonce>,
    timeout: Duration,
) -> Result<Handshaken, HandshakeError> {
    let peer_info = ch.peer();
    let (mut sink, mut source) = ch.split();
    let nonce_c = Nonce::random();
    let prearranged = expect.zip(boot_nonce);
    let early = prearranged
        .map(|(parent, nonce_a)| secret.prove(Role::Connector, me, &nonce_c, parent, &nonce_a));
    sink.feed(&Frame::control(Msg::Hello {
        id: me.clone(),
        protocol: PROTOCOL_VERSION,
        nonce: nonce_c,
        proof: early,
    }))?;
    sink.flush().await?;
    let (peer, nonce_a, proof_a) = match next(&mut *source, timeout).await?.msg {
        Msg::Challenge {
            id,
            protocol,
            nonce,
            proof,
        } => {
            check_version(protocol)?;
            (id, nonce, proof)
        }
        Msg::Error { error, .. } => return Err(HandshakeError::Refused(Box::new(error))),
        other => {
            return Err(ProtocolError::Unexpected {
                expected: "Challenge",
                got: other.kind_name(),
            }
            .into());
        }
    };
    if !secret.verify(&proof_a, Role::Acceptor, me, &nonce_c, &peer, &nonce_a) {
        return Err(HandshakeError::Unauthenticated(peer.to_string()));
    }
    if let Some(expected) = expect
        && *expected != peer
    {
        return Err(HandshakeError::WrongPeer {
            expected: expected.clone(),
            got: peer,
        });
    }
    if let Some((_, nonce)) = prearranged {
        if nonce_a != nonce {
            // Our proof covered the boot's nonce; an acceptor answering with another
            // one did not take it (and checked nothing).
            return Err(HandshakeError::Unauthenticated(format!(
                "{peer} (it did not answer the nonce of our boot)"
            )));
        }
        return Ok(Handshaken {
            peer,
            peer_info,
            sink,
            source,
        });
    }
    let proof_c = secret.prove(Role::Connector, me, &nonce_c, &peer, &nonce_a);
    sink.feed(&Frame::control(Msg::Answer { proof: proof_c }))?;
    sink.flush().await?;
    Ok(Handshaken {
        peer,
        peer_info,
        sink,
        source,
    })
}

/// Tell a peer why its channel is refused, then close it (a peer that does not read
/// gets 1 s).
pub(crate) async fn refuse(sink: &mut dyn FrameSink, error: RemoteError) {
    if sink
        .feed(&Frame::control(Msg::Error { cid: None, error }))
        .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }
}

/// The acceptor's `Challenge`: its id and nonce, and its proof over both nonces.
fn challenge(
    secret: &TreeSecret,
    me: &ActorId,
    peer: &ActorId,
    nonce_c: &Nonce,
    nonce_a: Nonce,
) -> Frame {
    Frame::control(Msg::Challenge {
        id: me.clone(),
        protocol: PROTOCOL_VERSION,
        nonce: nonce_a,
        proof: secret.prove(Role::Acceptor, peer, nonce_c, me, &nonce_a),
    })
}

/// Answer a handshake on a channel we accepted, as `me` (at tree path `path`, for the
/// refusal's origin): the peer must prove it knows the tree's secret before anything
/// else is read from it. On failure the peer is told why, typed, and the channel closed.
///
/// A new child that proved itself in its `Hello` over the nonce `expected` gives for it
/// is accepted at once; the `Challenge` is then queued but not sent, so that the caller
/// sends it with the spawn spec in one write.
pub(crate) async fn accept(
    ch: Box<dyn Channel>,
    me: &ActorId,
    path: &str,
    secret: &TreeSecret,
    expected: Expected<'_>,
    timeout: Duration,
) -> Result<Handshaken, HandshakeError> {
    let peer_info = ch.peer();
    let (mut sink, mut source) = ch.split();
    let deadline = tokio::time::Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let result = async {
        let (peer, nonce_c, early) = match next(&mut *source, left()).await?.msg {
            Msg::Hello {
                id,
                protocol,
                nonce,
                proof,
            } => {
                check_version(protocol)?;
                (id, nonce, proof)
            }
            other => {
                return Err(HandshakeError::from(ProtocolError::Unexpected {
                    expected: "Hello",
                    got: other.kind_name(),
                }));
            }
        };
        if let Some(proof) = early {
            // A new child proving itself over the nonce we gave it: one round trip.
            let nonce_a =
                expected(&peer).ok_or_else(|| HandshakeError::Unauthenticated(peer.to_string()))?;
            if !secret.verify(&proof, Role::Connector, &peer, &nonce_c, me, &nonce_a) {
                return Err(HandshakeError::Unauthenticated(peer.to_string()));
            }
            // Queued, not flushed: it leaves with the spawn spec.
            sink.feed(&challenge(secret, me, &peer, &nonce_c, nonce_a))?;
            return Ok(peer);
        }
        let nonce_a = Nonce::random();
        sink.feed(&challenge(secret, me, &peer, &nonce_c, nonce_a))?;
        sink.flush().await?;
        match next(&mut *source, left()).await?.msg {
            Msg::Answer { proof }
                if secret.verify(&proof, Role::Connector, &peer, &nonce_c, me, &nonce_a) =>
            {
                Ok(peer)
            }
            Msg::Answer { .. } => Err(HandshakeError::Unauthenticated(peer.to_string())),
            other => Err(ProtocolError::Unexpected {
                expected: "Answer",
                got: other.kind_name(),
            }
            .into()),
        }
    }
    .await;
    match result {
        Ok(peer) => Ok(Handshaken {
            peer,
            peer_info,
            sink,
            source,
        }),
        Err(e) => {
            let kind = match &e {
                HandshakeError::Unauthenticated(_) => Some(kinds::UNAUTHENTICATED),
                HandshakeError::Protocol(_)
                | HandshakeError::Channel(ChannelError::Protocol(_)) => Some(kinds::PROTOCOL),
                // A closed or broken channel cannot carry a refusal.
                _ => None,
            };
            if let Some(kind) = kind {
                tracing::warn!(peer = ?peer_info, error = %e, "refusing a channel");
                refuse(&mut *sink, RemoteError::new(kind, e.to_string(), path)).await;
            }
            Err(e)
        }
    }
}
