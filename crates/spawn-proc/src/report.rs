//! The sandbox report's way back: the boot's socket, which the child keeps after it read
//! its boot. A length-prefixed [`sandbox::Outcome`] goes up it once.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// The most a report may take (a sandbox with many paths is a few KiB).
const MAX_REPORT: usize = 64 * 1024;

/// In the child: send an encoded outcome (`body`) to the parent.
pub(crate) fn send(back: OwnedFd, body: &[u8]) -> io::Result<()> {
    let mut stream = UnixStream::from(back);
    stream.write_all(&(body.len() as u32).to_le_bytes())?;
    stream.write_all(body)
}

/// In the parent: wait up to `bound` for the child's outcome.
pub(crate) async fn receive(back: UnixStream, bound: Duration) -> io::Result<sandbox::Outcome> {
    back.set_nonblocking(true)?;
    let mut stream = tokio::net::UnixStream::from_std(back)?;
    let read = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_REPORT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a sandbox report of {len} bytes"),
            ));
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        sandbox::decode_outcome(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    };
    tokio::time::timeout(bound, read).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no sandbox report within {bound:?}"),
        )
    })?
}
