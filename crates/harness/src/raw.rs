//! A peer that speaks brood's wire protocol by hand, over a blocking Unix socket: for
//! tests that play a hostile or broken peer (garbage frames, wrong proofs, lying windows,
//! floods) against a real actor.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use spawn_api::codec::{encode_frame, read_frame_blocking};
use spawn_api::{
    ActorId, CallKind, ChannelError, Cid, Frame, Msg, Nonce, PROTOCOL_VERSION, ProofRole,
    RemoteError, TreeSecret, Window, Wire,
};

/// A raw connection to an actor's socket.
#[derive(Debug)]
pub struct RawPeer {
    /// The socket (blocking).
    pub stream: UnixStream,
    /// The id this peer calls itself.
    pub id: ActorId,
}

/// How a raw handshake went.
#[derive(Debug)]
pub enum RawHandshake {
    /// The actor accepted our proof (we checked its proof too): calls may follow.
    Accepted {
        /// The actor's id.
        peer: ActorId,
    },
    /// The actor refused us with this error.
    Refused(RemoteError),
    /// The actor closed the channel without a word, or sent something else.
    Other(String),
}

impl RawPeer {
    /// Connect to the Unix socket at `path` (an actor's `uds:` address without the
    /// prefix), with a 10 s read timeout.
    ///
    /// # Panics
    /// If the socket cannot be reached.
    pub fn connect(path: &str) -> RawPeer {
        let stream = UnixStream::connect(path).expect("connect to the actor's socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawPeer {
            stream,
            id: ActorId::new("raw-peer"),
        }
    }

    /// Write raw bytes.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Write one frame.
    ///
    /// # Panics
    /// If the frame does not encode (above 64 MiB).
    pub fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        let wire = encode_frame(frame, 64 << 20).expect("frame encodes");
        self.stream.write_all(&wire)
    }

    /// Read one frame (`Ok(None)` at the end of the stream).
    pub fn recv(&mut self) -> Result<Option<Frame>, ChannelError> {
        read_frame_blocking(&mut self.stream, 64 << 20)
    }

    /// Read every frame until the actor closes the channel (or the read times out), then
    /// drain what is left.
    pub fn recv_all(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Ok(Some(f)) = self.recv() {
            frames.push(f);
        }
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest);
        frames
    }

    /// Do the connector's side of the handshake proving `secret` (pass a wrong one to
    /// play an outsider).
    pub fn handshake(&mut self, secret: &TreeSecret) -> RawHandshake {
        let nonce_c = Nonce::random();
        if let Err(e) = self.send(&Frame::control(Msg::Hello {
            id: self.id.clone(),
            protocol: PROTOCOL_VERSION,
            nonce: nonce_c,
            proof: None,
        })) {
            return RawHandshake::Other(format!("sending Hello: {e}"));
        }
        let (peer, nonce_a, proof_a) = match self.recv() {
            Ok(Some(Frame {
                msg: Msg::Challenge {
                    id, nonce, proof, ..
                },
                ..
            })) => (id, nonce, proof),
            Ok(Some(Frame {
                msg: Msg::Error { error, .. },
                ..
            })) => return RawHandshake::Refused(error),
            other => return RawHandshake::Other(format!("instead of a Challenge: {other:?}")),
        };
        let answer = secret.prove(ProofRole::Connector, &self.id, &nonce_c, &peer, &nonce_a);
        if let Err(e) = self.send(&Frame::control(Msg::Answer { proof: answer })) {
            return RawHandshake::Other(format!("sending Answer: {e}"));
        }
        if !secret.verify(
            &proof_a,
            ProofRole::Acceptor,
            &self.id,
            &nonce_c,
            &peer,
            &nonce_a,
        ) {
            // With a wrong secret we cannot check the actor; wait for its verdict.
            return match self.recv() {
                Ok(Some(Frame {
                    msg: Msg::Error { error, .. },
                    ..
                })) => RawHandshake::Refused(error),
                other => RawHandshake::Other(format!("after a wrong proof: {other:?}")),
            };
        }
        RawHandshake::Accepted { peer }
    }

    /// Start call `cid` (odd: this peer connected) of `func` with `args`, announcing
    /// `window` for what the actor may send back.
    ///
    /// # Panics
    /// If `args` do not encode.
    pub fn start<A: Wire>(
        &mut self,
        cid: Cid,
        func: &str,
        kind: CallKind,
        window: Window,
        args: A,
    ) -> std::io::Result<()> {
        let args = args.encode().expect("arguments encode");
        self.send(&Frame::with_payload(
            Msg::Start {
                cid,
                func: func.to_owned(),
                kind,
                window,
            },
            args,
        ))
    }
}
