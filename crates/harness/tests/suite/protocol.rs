//! Broken frames from a raw peer are typed protocol errors, before and after the
//! handshake; the actor keeps serving its other channels.

use brood::{
    ActorId, ActorOptions, ChannelLimits, RemoteError, RuntimeVars, TeardownPolicy, TreeSecret,
    kinds,
};
use harness::Failed;
use harness::functions::*;
use harness::raw::{RawHandshake, RawPeer};
// The wire, spoken by hand: internal to brood.
use spawn_api::codec::encode_frame;
use spawn_api::{Frame, Msg, Nonce, PROTOCOL_VERSION, SpawnSpec};

use crate::common::*;

crate::tests!(
    garbage_truncated_and_oversized_frames_are_typed_protocol_errors,
    a_peer_of_another_protocol_version_is_refused_with_a_clear_message,
);

fn protocol_error(frames: &[Frame]) -> RemoteError {
    match frames.last() {
        Some(Frame {
            msg: Msg::Error { cid: None, error },
            ..
        }) if error.kind == kinds::PROTOCOL => error.clone(),
        other => panic!("expected a protocol error frame, got {other:?}"),
    }
}

/// A raw peer sends `steps` (after a valid handshake with `secret`, if given) and reads
/// what the actor answers until it closes the channel.
fn raw_exchange(
    path: &str,
    secret: Option<&TreeSecret>,
    steps: &[Vec<u8>],
    shutdown: bool,
) -> Vec<Frame> {
    let mut peer = RawPeer::connect(path);
    if let Some(secret) = secret {
        match peer.handshake(secret) {
            RawHandshake::Accepted { .. } => {}
            other => panic!("the handshake failed: {other:?}"),
        }
    }
    for b in steps {
        peer.write(b).unwrap();
    }
    if shutdown {
        peer.shutdown_write().unwrap();
    }
    peer.recv_all()
}

/// Bytes that are not frames can only be written to a socket: the target listens on
/// `uds` whatever the cell (in the `shm` column, a `uds` child of an `shm` root). What
/// `shm` does with garbage in its rings is `ipc-shm`'s own tests' (an adversarial peer
/// writing random bytes into the shared header and data).
fn garbage_truncated_and_oversized_frames_are_typed_protocol_errors() -> Result<(), Failed> {
    let secret = TreeSecret::random();
    let s2 = secret.clone();
    within_deadline(harness::root().secret(secret).run(async move |n| {
        let p = n
            .start_actor("target", ActorOptions::new().transport(ipc_uds::KEY))
            .await?;
        let who = p.run(WhoAmI, ()).await?;
        let path = who.addr.strip_prefix("uds:").unwrap().to_owned();
        let spec = encode_frame(
            &Frame::control(Msg::SpawnSpec(Box::new(SpawnSpec {
                child: ActorId::new("x"),
                parent: ActorId::new("y"),
                vars: RuntimeVars::root("r", "proc"),
                teardown: TeardownPolicy::default(),
                limits: ChannelLimits::default(),
            }))),
            1 << 20,
        )?
        .to_vec();
        // (handshake first, bytes, shut the write side, expected in the error)
        let cases: Vec<(bool, Vec<Vec<u8>>, bool, &str)> = vec![
            (
                false,
                vec![b"\x05\x00\x00\x00garbage!".to_vec()],
                false,
                "undecodable",
            ),
            (
                false,
                vec![b"\x64\x00\x00\x00only-ten!!".to_vec()],
                true,
                "truncated",
            ),
            (
                false,
                vec![u32::MAX.to_le_bytes().to_vec()],
                false,
                "exceeds the maximum",
            ),
            (false, vec![spec.clone()], false, "unexpected SpawnSpec"),
            (
                true,
                vec![b"\x03\x00\x00\x00\xff\xff\xff".to_vec()],
                false,
                "undecodable",
            ),
            (true, vec![spec], false, "unexpected SpawnSpec"),
        ];
        for (handshake, steps, shutdown, expect) in cases {
            let path = path.clone();
            let secret = s2.clone();
            let frames = tokio::task::spawn_blocking(move || {
                raw_exchange(&path, handshake.then_some(&secret), &steps, shutdown)
            })
            .await?;
            let e = protocol_error(&frames);
            assert!(e.message.contains(expect), "expected {expect:?} in {e}");
            assert_eq!(e.origin, "root/target");
            // The actor keeps serving its other channels.
            assert_eq!(p.run(Add, (20, 22)).await?, 42);
        }
        Ok(())
    }))?;
    Ok(())
}

/// A peer built with another version of brood says so in its `Hello`: the actor refuses
/// it with a protocol error that names both versions and what to do, and serves on.
fn a_peer_of_another_protocol_version_is_refused_with_a_clear_message() -> Result<(), Failed> {
    with_root(async |n| {
        let p = n
            .start_actor("target", ActorOptions::new().transport(ipc_uds::KEY))
            .await?;
        let who = p.run(WhoAmI, ()).await?;
        let path = who.addr.strip_prefix("uds:").unwrap().to_owned();
        for theirs in [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1] {
            let hello = encode_frame(
                &Frame::control(Msg::Hello {
                    id: ActorId::new("from-another-version"),
                    protocol: theirs,
                    nonce: Nonce::random(),
                    proof: None,
                }),
                1 << 20,
            )?
            .to_vec();
            let path = path.clone();
            let frames =
                tokio::task::spawn_blocking(move || raw_exchange(&path, None, &[hello], false))
                    .await?;
            let e = protocol_error(&frames);
            let says =
                format!("speaks brood protocol {theirs}, this actor speaks {PROTOCOL_VERSION}");
            assert!(e.message.contains(&says), "expected {says:?} in {e}");
            assert!(e.message.contains("same version of brood"), "{e}");
            assert_eq!(p.run(Add, (20, 22)).await?, 42, "the actor serves on");
        }
        Ok(())
    })?;
    Ok(())
}
