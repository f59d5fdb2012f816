//! A channel's two halves as brood's [`FrameSink`] and [`FrameSource`]: the frame codec
//! over the ring streams.

use std::io;
use std::sync::Arc;

use spawn_api::codec::{FrameReader, FrameWriter};
use spawn_api::{
    Channel, ChannelError, Frame, FrameSink, FrameSource, PeerInfo, ProtocolError, async_trait,
};

#[cfg(test)]
use crate::ring::Segment;
use crate::setup::{Config, Parts};
use crate::stream::{RingReader, RingWriter};

/// One side of a shared-memory channel: our ring end of each direction, the doorbells
/// and the control socket.
#[derive(Debug)]
pub struct ShmChannel {
    reader: RingReader,
    writer: RingWriter,
    peer: PeerInfo,
    max_frame: usize,
    #[cfg(test)]
    segment: Segment,
}

impl ShmChannel {
    /// Our side of a channel that is set up, with the peer the kernel named.
    pub(crate) fn new(parts: Parts, peer: PeerInfo, cfg: &Config) -> ShmChannel {
        let Parts {
            segment,
            side,
            bell,
        } = parts;
        let bell = Arc::new(bell);
        let (prod, cons) = segment.ends(side);
        ShmChannel {
            reader: RingReader::new(cons, bell.clone(), cfg.spin),
            writer: RingWriter::new(prod, bell, cfg.spin),
            peer,
            max_frame: cfg.max_frame,
            #[cfg(test)]
            segment,
        }
    }

    /// The segment, to scribble on as a hostile peer would.
    #[cfg(test)]
    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }
}

impl Channel for ShmChannel {
    fn peer(&self) -> PeerInfo {
        self.peer.clone()
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSink>, Box<dyn FrameSource>) {
        let ShmChannel {
            reader,
            writer,
            max_frame,
            ..
        } = *self;
        (
            Box::new(ShmSink(FrameWriter::new(writer, max_frame))),
            Box::new(ShmSource(FrameReader::new(reader, max_frame))),
        )
    }
}

/// A channel error, with a ring's protocol error (carried through tokio's I/O traits as
/// an `io::Error`) unwrapped again.
fn channel_error(e: ChannelError) -> ChannelError {
    match e {
        ChannelError::Io(io) if io.get_ref().is_some_and(|i| i.is::<ProtocolError>()) => {
            let kind = io.kind();
            match io.into_inner().map(|i| i.downcast::<ProtocolError>()) {
                Some(Ok(p)) => ChannelError::Protocol(*p),
                Some(Err(other)) => ChannelError::Io(io::Error::new(kind, other)),
                None => ChannelError::Io(kind.into()),
            }
        }
        other => other,
    }
}

struct ShmSink(FrameWriter<RingWriter>);

#[async_trait]
impl FrameSink for ShmSink {
    fn feed(&mut self, frame: &Frame) -> Result<(), ChannelError> {
        Ok(self.0.feed(frame)?)
    }

    async fn flush(&mut self) -> Result<(), ChannelError> {
        self.0
            .flush()
            .await
            .map_err(|e| channel_error(ChannelError::Io(e)))
    }

    async fn close(&mut self) -> Result<(), ChannelError> {
        self.0
            .shutdown()
            .await
            .map_err(|e| channel_error(ChannelError::Io(e)))
    }
}

/// Not cancel safe for large frames (as `ipc-uds`'s): it reads with
/// [`FrameReader::read_frame`].
struct ShmSource(FrameReader<RingReader>);

#[async_trait]
impl FrameSource for ShmSource {
    async fn recv(&mut self) -> Result<Option<Frame>, ChannelError> {
        self.0.read_frame().await.map_err(channel_error)
    }
}
