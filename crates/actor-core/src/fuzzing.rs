//! Entry points for fuzz targets (`fuzz/` at the workspace root) and for tests that
//! replay their corpora: each runs one decoder of outside input on arbitrary bytes and
//! must return, never panic, whatever the bytes. Not part of the API a program uses.

use std::time::Duration;

use bytes::Bytes;
use spawn_api::codec::{FrameReader, decode_frame};
use spawn_api::{
    ActorId, Channel, ChannelError, ChildBoot, Frame, FrameSink, FrameSource, Nonce, PeerInfo,
    TreeSecret,
};

/// Decode one frame body (what follows a length prefix).
pub fn frame_body(data: &[u8]) {
    let _ = decode_frame(Bytes::copy_from_slice(data));
}

/// Read frames from a byte stream until it ends or breaks, with a 1 MiB frame limit.
pub fn frame_stream(data: &[u8]) {
    let rt = runtime();
    rt.block_on(async {
        let mut r = FrameReader::new(data, 1 << 20);
        while let Ok(Some(_)) = r.read_frame().await {}
    });
}

/// Decode what a member root sends its registrar (a batch of table updates, as the
/// payload of a `Join` item) and apply it to a table.
pub fn registrar_updates(data: &[u8]) {
    if let Ok(updates) = postcard::from_bytes::<Vec<crate::registrar::Update>>(data) {
        crate::registrar::apply_untrusted(updates);
    }
}

/// Seeds for [`registrar_updates`]: a member's tree as it joins, a removal, and broken
/// encodings.
pub fn registrar_update_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::registrar::{ActorInfo, Update};
    let root = ActorInfo {
        id: ActorId::with_uid("beta", 1),
        path: "beta".into(),
        addr: spawn_api::Addr::new("uds", "/run/brood/t1/beta.sock"),
        pid: 10,
        backend: "proc".into(),
        parent: None,
        started_unix_ms: 1_700_000_000_000,
    };
    let child = ActorInfo {
        id: ActorId::with_uid("far", 2),
        path: "beta/far".into(),
        addr: spawn_api::Addr::new("shm", "/run/brood/t1/far.sock"),
        pid: 11,
        backend: "fork".into(),
        parent: Some(root.id.clone()),
        started_unix_ms: 1_700_000_000_001,
    };
    let enc = |u: &Vec<Update>| postcard::to_allocvec(u).expect("encodes");
    let joined = enc(&vec![
        Update::Upsert(root.clone()),
        Update::Upsert(child.clone()),
    ]);
    let removed = enc(&vec![Update::Remove(vec![
        root.id.clone(),
        child.id.clone(),
    ])]);
    let orphan = enc(&vec![Update::Upsert(child)]);
    vec![
        ("joined", joined.clone()),
        ("removed", removed),
        ("orphan", orphan),
        ("broken-truncated", joined[..joined.len() - 1].to_vec()),
        ("broken-empty", Vec::new()),
    ]
}

/// Decode a child's boot.
pub fn child_boot(data: &[u8]) {
    let _ = ChildBoot::from_bytes(data);
}

/// Answer a handshake (the acceptor's side, expecting new children whose id has an even
/// uid) from a peer that sends `data`; then open one (the connector's side, as a peer and
/// as a new child) to a peer that answers with `data`.
pub fn handshake(data: &[u8]) {
    let rt = runtime();
    let secret = TreeSecret::from_bytes([7; 32]);
    let me = ActorId::with_uid("fuzz", 1);
    let parent = ActorId::with_uid("parent", 2);
    let expected = |id: &ActorId| id.uid().is_multiple_of(2).then_some(Nonce([3; 16]));
    rt.block_on(async {
        let _ = crate::handshake::accept(
            Box::new(Scripted::new(data)),
            &me,
            "fuzz",
            &secret,
            &expected,
            Duration::from_secs(1),
        )
        .await;
        for (expect, boot_nonce) in [(None, None), (Some(&parent), Some(Nonce([3; 16])))] {
            let _ = crate::handshake::connect(
                Box::new(Scripted::new(data)),
                &me,
                &secret,
                expect,
                boot_nonce,
                Duration::from_secs(1),
            )
            .await;
        }
    });
}

/// A current-thread runtime. (The scripted peers' bytes are finite, so nothing here waits
/// on a timer: a stream ends in a clean or broken end of frames.)
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

/// A channel whose peer "sends" the frames encoded in some bytes and reads nothing.
#[derive(Debug)]
struct Scripted {
    data: Vec<u8>,
}

impl Scripted {
    fn new(data: &[u8]) -> Scripted {
        Scripted {
            data: data.to_vec(),
        }
    }
}

impl Channel for Scripted {
    fn peer(&self) -> PeerInfo {
        PeerInfo::default()
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSink>, Box<dyn FrameSource>) {
        (
            Box::new(Discard),
            Box::new(ScriptedSource(FrameReader::new(
                std::io::Cursor::new(self.data),
                1 << 20,
            ))),
        )
    }
}

struct Discard;

#[spawn_api::async_trait]
impl FrameSink for Discard {
    fn feed(&mut self, _frame: &Frame) -> Result<(), ChannelError> {
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }
    async fn close(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }
}

struct ScriptedSource(FrameReader<std::io::Cursor<Vec<u8>>>);

#[spawn_api::async_trait]
impl FrameSource for ScriptedSource {
    async fn recv(&mut self) -> Result<Option<Frame>, ChannelError> {
        self.0.read_frame().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spawn_api::auth::Proof;
    use spawn_api::codec::encode_frame;
    use spawn_api::{Msg, PROTOCOL_VERSION};

    #[test]
    fn every_entry_point_takes_garbage() {
        let hello = encode_frame(
            &Frame::control(Msg::Hello {
                id: ActorId::new("x"),
                protocol: PROTOCOL_VERSION,
                nonce: Nonce([0; 16]),
                proof: None,
            }),
            1 << 20,
        )
        .unwrap();
        let answer = encode_frame(
            &Frame::control(Msg::Answer {
                proof: Proof([0; 32]),
            }),
            1 << 20,
        )
        .unwrap();
        let mut both = hello.to_vec();
        both.extend_from_slice(&answer);
        for data in [
            &b""[..],
            b"\x00",
            b"\xff\xff\xff\xff",
            b"\x05\x00\x00\x00garbage",
            &hello,
            &both,
        ] {
            frame_body(data);
            frame_stream(data);
            child_boot(data);
            handshake(data);
        }
    }
}
