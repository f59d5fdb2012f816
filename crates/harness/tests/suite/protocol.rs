//! Broken frames from a raw peer are typed protocol errors.

use std::io::{Read, Write};
use std::time::Duration;

use harness::functions::*;
use harness::{Failed, with_root};
use spawn_api::codec::{encode_frame, read_frame_blocking};
use spawn_api::{
    ActorId, ActorOptions, Frame, Msg, PROTOCOL_VERSION, RemoteError, RuntimeVars, TeardownPolicy,
    kinds,
};

crate::tests!(garbage_truncated_and_oversized_frames_are_typed_protocol_errors,);

/// Send raw bytes to an actor's socket and read what it answers before closing.
fn raw_exchange(path: &str, steps: &[&[u8]], shutdown: bool) -> Vec<Frame> {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for b in steps {
        s.write_all(b).unwrap();
    }
    if shutdown {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut frames = Vec::new();
    while let Ok(Some(f)) = read_frame_blocking(&mut s, 1 << 20) {
        frames.push(f);
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    frames
}

fn protocol_error(frames: &[Frame]) -> RemoteError {
    match frames.last() {
        Some(Frame {
            msg: Msg::Error { cid: None, error },
            ..
        }) if error.kind == kinds::PROTOCOL => error.clone(),
        other => panic!("expected a protocol error frame, got {other:?}"),
    }
}

fn garbage_truncated_and_oversized_frames_are_typed_protocol_errors() -> Result<(), Failed> {
    if harness::transport() != "uds" {
        return Err("this test speaks raw Unix-socket frames".into());
    }
    with_root(async |n| {
        let p = n.start_actor("target", ActorOptions::new()).await?;
        let who = p.run(WhoAmI, ()).await?;
        let path = who.addr.strip_prefix("uds:").unwrap().to_owned();
        let handshake = encode_frame(
            &Frame::control(Msg::Handshake {
                id: ActorId::new("probe"),
                protocol: PROTOCOL_VERSION,
            }),
            1 << 20,
        )?;
        let cases: Vec<(Vec<Vec<u8>>, bool, &str)> = vec![
            (
                vec![b"\x05\x00\x00\x00garbage!".to_vec()],
                false,
                "undecodable",
            ),
            (
                vec![b"\x64\x00\x00\x00only-ten!!".to_vec()],
                true,
                "truncated",
            ),
            (
                vec![u32::MAX.to_le_bytes().to_vec()],
                false,
                "exceeds the maximum",
            ),
            (
                vec![handshake.to_vec(), b"\x03\x00\x00\x00\xff\xff\xff".to_vec()],
                false,
                "undecodable",
            ),
            (
                vec![
                    handshake.to_vec(),
                    encode_frame(
                        &Frame::control(Msg::SpawnSpec(Box::new(spawn_api::SpawnSpec {
                            child: ActorId::new("x"),
                            parent: ActorId::new("y"),
                            vars: RuntimeVars::root("r", "proc"),
                            teardown: TeardownPolicy::default(),
                            stream_buffer: 1,
                        }))),
                        1 << 20,
                    )?
                    .to_vec(),
                ],
                false,
                "unexpected SpawnSpec",
            ),
        ];
        for (steps, shutdown, expect) in cases {
            let path = path.clone();
            let frames = tokio::task::spawn_blocking(move || {
                let steps: Vec<&[u8]> = steps.iter().map(Vec::as_slice).collect();
                raw_exchange(&path, &steps, shutdown)
            })
            .await?;
            let e = protocol_error(&frames);
            assert!(e.message.contains(expect), "expected {expect:?} in {e}");
            assert_eq!(e.origin, "root/target");
            // The actor keeps serving its other channels.
            assert_eq!(p.run(Add, (20, 22)).await?, 42);
        }
        Ok(())
    })?;
    Ok(())
}
