//! A peer that speaks brood's wire protocol by hand, blocking: for tests that play a
//! hostile or broken peer (garbage frames, wrong proofs, lying windows, floods) against a
//! real actor.
//!
//! Over `uds` it writes and reads the socket itself, so it can also send bytes that are
//! not frames ([`RawPeer::write`]). Over any other transport (`shm`) it opens a channel
//! with that transport and sends and receives whole frames through it: the transport's
//! own framing is then the transport's (its tests send it garbage), and everything
//! above it (the handshake, windows, bounds) is what the peer plays with.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use spawn_api::codec::{encode_frame, read_frame_blocking};
use spawn_api::{
    ActorId, Addr, CallKind, ChannelError, Cid, Frame, FrameSink, FrameSource, Msg, Nonce,
    PROTOCOL_VERSION, ProofRole, RemoteError, Transport, TreeSecret, Window, Wire,
};

/// How long a read waits before it gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw connection to an actor.
pub struct RawPeer {
    link: Link,
    /// The id this peer calls itself.
    pub id: ActorId,
    /// How long a write may wait for the actor to make room (`None`: as long as it takes).
    write_timeout: Option<Duration>,
}

impl std::fmt::Debug for RawPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let link = match &self.link {
            Link::Socket(s) => format!("{s:?}"),
            Link::Channel { .. } => "channel".to_owned(),
            Link::Closed => "closed".to_owned(),
        };
        f.debug_struct("RawPeer")
            .field("link", &link)
            .field("id", &self.id)
            .finish()
    }
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

/// How a [`RawPeer`] reaches its actor.
enum Link {
    /// A blocking Unix socket (`uds`).
    Socket(UnixStream),
    /// A channel of another transport, driven on a runtime of its own.
    Channel {
        sink: Box<dyn FrameSink>,
        source: Box<dyn FrameSource>,
        rt: tokio::runtime::Runtime,
    },
    /// Dropped.
    Closed,
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        // A peer may be dropped in a task (a test hands it from a blocking thread to its
        // async checks), where a runtime cannot be dropped: close the channel inside its
        // runtime, then let the runtime go in the background.
        if let Link::Channel { sink, source, rt } = std::mem::replace(&mut self.link, Link::Closed)
        {
            let entered = rt.enter();
            drop((sink, source));
            drop(entered);
            rt.shutdown_background();
        }
    }
}

/// A channel's error as the socket's would be: its own I/O error, else `Other`.
fn channel_io(e: ChannelError) -> std::io::Error {
    match e {
        ChannelError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

fn closed() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::NotConnected)
}

fn unsupported(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("{what} needs a Unix socket (a uds actor)"),
    )
}

impl RawPeer {
    /// Connect to the actor at `addr`: an address in its display form (`uds:/…`,
    /// `shm:/…`) or, for `uds`, the bare socket path. Reads time out after 10 s.
    ///
    /// # Panics
    /// If the actor cannot be reached.
    pub fn connect(addr: &str) -> RawPeer {
        let link = match addr.split_once(':') {
            Some((ipc_shm::KEY, _)) => {
                let addr: Addr = addr.parse().expect("an actor address");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the raw peer");
                let channel = rt
                    .block_on(ipc_shm::ShmTransport::new().connect(&addr))
                    .expect("connect to the actor");
                let (sink, source) = channel.split();
                Link::Channel { sink, source, rt }
            }
            Some((ipc_uds::KEY, path)) => Link::Socket(Self::socket(path)),
            Some((other, _)) => panic!("the raw peer does not speak {other:?}: {addr}"),
            None => Link::Socket(Self::socket(addr)),
        };
        RawPeer {
            link,
            id: ActorId::new("raw-peer"),
            write_timeout: None,
        }
    }

    /// Give up a write that waits longer than `timeout` for the actor to make room: it
    /// fails with [`std::io::ErrorKind::WouldBlock`] (a socket) or
    /// [`std::io::ErrorKind::TimedOut`] (a channel), and what it did not write stays
    /// queued on a channel.
    ///
    /// # Errors
    /// The socket's.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.write_timeout = timeout;
        match &mut self.link {
            Link::Socket(s) => s.set_write_timeout(timeout),
            _ => Ok(()),
        }
    }

    /// Write `frame` `n` times, in one write where the transport allows.
    ///
    /// # Errors
    /// As [`RawPeer::send`].
    ///
    /// # Panics
    /// If the frame does not encode (above 64 MiB).
    pub fn send_many(&mut self, frame: &Frame, n: usize) -> std::io::Result<()> {
        match &mut self.link {
            Link::Socket(s) => {
                let wire = encode_frame(frame, 64 << 20).expect("frame encodes");
                s.write_all(&wire.repeat(n))
            }
            Link::Channel { sink, .. } => {
                for _ in 0..n {
                    sink.feed(frame).map_err(channel_io)?;
                }
                self.flush_channel()
            }
            Link::Closed => Err(closed()),
        }
    }

    /// Flush a channel's sink, within the write timeout.
    fn flush_channel(&mut self) -> std::io::Result<()> {
        let timeout = self.write_timeout;
        let Link::Channel { sink, rt, .. } = &mut self.link else {
            return Ok(());
        };
        rt.block_on(async {
            match timeout {
                Some(t) => tokio::time::timeout(t, sink.flush())
                    .await
                    .unwrap_or_else(|_| {
                        Err(ChannelError::Io(std::io::Error::from(
                            std::io::ErrorKind::TimedOut,
                        )))
                    }),
                None => sink.flush().await,
            }
        })
        .map_err(channel_io)
    }

    fn socket(path: &str) -> UnixStream {
        let stream = UnixStream::connect(path).expect("connect to the actor's socket");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
    }

    /// Write raw bytes (over `uds` only: other transports carry whole frames).
    ///
    /// # Errors
    /// The socket's, or [`std::io::ErrorKind::Unsupported`] on another transport.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.link {
            Link::Socket(s) => s.write_all(bytes),
            _ => Err(unsupported("writing raw bytes")),
        }
    }

    /// Shut the writing direction (over `uds` only).
    ///
    /// # Errors
    /// The socket's, or [`std::io::ErrorKind::Unsupported`] on another transport.
    pub fn shutdown_write(&mut self) -> std::io::Result<()> {
        match &mut self.link {
            Link::Socket(s) => s.shutdown(std::net::Shutdown::Write),
            _ => Err(unsupported("a half close")),
        }
    }

    /// Write one frame.
    ///
    /// # Panics
    /// If the frame does not encode (above 64 MiB).
    pub fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        match &mut self.link {
            Link::Socket(s) => {
                let wire = encode_frame(frame, 64 << 20).expect("frame encodes");
                s.write_all(&wire)
            }
            Link::Channel { sink, .. } => {
                sink.feed(frame).map_err(channel_io)?;
                self.flush_channel()
            }
            Link::Closed => Err(closed()),
        }
    }

    /// Read one frame (`Ok(None)` at the end of the stream).
    pub fn recv(&mut self) -> Result<Option<Frame>, ChannelError> {
        match &mut self.link {
            Link::Socket(s) => read_frame_blocking(s, 64 << 20),
            Link::Channel { source, rt, .. } => rt
                .block_on(async { tokio::time::timeout(READ_TIMEOUT, source.recv()).await })
                .unwrap_or_else(|_| {
                    Err(ChannelError::Io(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                }),
            Link::Closed => Err(ChannelError::Io(closed())),
        }
    }

    /// Read every frame until the actor closes the channel (or the read times out), then
    /// drain what is left.
    pub fn recv_all(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Ok(Some(f)) = self.recv() {
            frames.push(f);
        }
        if let Link::Socket(s) = &mut self.link {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        }
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
                sig: 0,
            },
            args,
        ))
    }
}
