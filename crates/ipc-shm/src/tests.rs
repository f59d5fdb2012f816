//! The transport end to end: real memfds, mappings, doorbells and control sockets, in
//! this process and with peer processes (this test binary run again as a peer).

use super::*;
use bytes::Bytes;
use spawn_api::Msg;
use spawn_api::{ChannelError, Frame, FrameSink, FrameSource, ProtocolError};
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use std::{fs, io};

/// A fresh directory path under /tmp (not created), removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "shm-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A bound on how long anything may take (`BROOD_TEST_TIME_SCALE` widens it).
fn scaled(d: Duration) -> Duration {
    let f: f64 = std::env::var("BROOD_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|f: &f64| *f >= 1.0)
        .unwrap_or(1.0);
    d.mul_f64(f)
}

/// Run `f` with a 20 s deadline: a hang is a failure, not a stuck test run.
async fn deadline<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(scaled(Duration::from_secs(20)), f)
        .await
        .expect("the test hung")
}

fn frame(cid: u64, len: usize) -> Frame {
    let payload: Vec<u8> = (0..len).map(|i| (i as u64 ^ cid) as u8).collect();
    Frame::with_payload(Msg::Yield { cid }, Bytes::from(payload))
}

/// A connected pair (client, server) of `t` in a fresh tree, with its listener and
/// address.
async fn pair(t: &ShmTransport) -> (ShmChannel, ShmChannel, ShmListener, Addr) {
    let addr = t.address_for(&ActorId::new("root"), None).unwrap();
    let mut listener = t.listen(&addr).unwrap();
    let client = t.open(&addr).await.unwrap();
    let server = listener.accept_shm().await.unwrap();
    (client, server, listener, addr)
}

fn split(ch: ShmChannel) -> (Box<dyn FrameSink>, Box<dyn FrameSource>) {
    Box::new(ch).split()
}

async fn send(tx: &mut dyn FrameSink, f: &Frame) {
    tx.feed(f).unwrap();
    tx.flush().await.unwrap();
}

#[tokio::test]
async fn small_and_huge_frames_flow_both_ways_and_a_close_ends_the_stream() {
    let tmp = TempDir::new();
    deadline(async {
        // Rings of one page: a 3 MiB frame goes through in hundreds of pieces.
        let t = ShmTransport::new().with_dir(&tmp.0).with_ring_size(1);
        assert_eq!(t.ring_size(), MIN_RING_SIZE);
        let (client, server, listener, addr) = pair(&t).await;
        assert_eq!(listener.local_addr(), &addr);
        assert_eq!(server.peer().pid, Some(std::process::id()));
        assert_eq!(client.peer().uid, Some(peercred::effective_uid()));
        let (mut ctx, mut crx) = split(client);
        let (mut stx, mut srx) = split(server);

        let huge = frame(1, 3 << 20);
        let small = Frame::with_payload(Msg::Return { cid: 1 }, Bytes::from_static(b"ok"));
        ctx.feed(&huge).unwrap();
        for cid in 0..100 {
            ctx.feed(&frame(cid, cid as usize)).unwrap();
        }
        ctx.feed(&small).unwrap();
        let send = async { ctx.flush().await.unwrap() };
        let recv = async {
            assert_eq!(srx.recv().await.unwrap().unwrap(), huge);
            for cid in 0..100 {
                assert_eq!(srx.recv().await.unwrap().unwrap(), frame(cid, cid as usize));
            }
            assert_eq!(srx.recv().await.unwrap().unwrap(), small);
        };
        tokio::join!(send, recv);

        stx.feed(&small).unwrap();
        stx.close().await.unwrap();
        assert_eq!(crx.recv().await.unwrap().unwrap(), small);
        assert!(crx.recv().await.unwrap().is_none(), "clean end after close");
        assert!(crx.recv().await.unwrap().is_none(), "and stays ended");
        stx.feed(&small).unwrap();
        assert!(stx.flush().await.is_err(), "no writing after a close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_much_larger_than_the_ring_streams_through_between_threads() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new()
            .with_dir(&tmp.0)
            .with_ring_size(64 << 10)
            .with_spin(Duration::ZERO);
        let (client, server, _l, _) = pair(&t).await;
        let (mut ctx, _crx) = split(client);
        let (_stx, mut srx) = split(server);
        let big = frame(7, 24 << 20);
        let expected = big.clone();
        let reader = tokio::spawn(async move { srx.recv().await.unwrap().unwrap() });
        send(&mut *ctx, &big).await;
        assert!(reader.await.unwrap() == expected);
    })
    .await;
}

#[tokio::test]
async fn a_full_ring_makes_the_writer_wait_until_the_peer_reads() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new()
            .with_dir(&tmp.0)
            .with_ring_size(MIN_RING_SIZE);
        let (client, server, _l, _) = pair(&t).await;
        let (mut ctx, _crx) = split(client);
        let (_stx, mut srx) = split(server);
        let big = frame(3, 1 << 20);
        ctx.feed(&big).unwrap();
        {
            let flush = ctx.flush();
            tokio::pin!(flush);
            assert!(
                tokio::time::timeout(Duration::from_millis(50), flush.as_mut())
                    .await
                    .is_err(),
                "nobody reads: the writer waits (nothing dropped, nothing queued beyond the ring)"
            );
            let (sent, got) = tokio::join!(flush, srx.recv());
            sent.unwrap();
            assert_eq!(got.unwrap().unwrap(), big);
        }
    })
    .await;
}

#[tokio::test]
async fn a_frame_above_the_maximum_is_refused_on_both_ends() {
    let tmp = TempDir::new();
    deadline(async {
        let small = ShmTransport::new().with_dir(&tmp.0).with_max_frame(1024);
        let big = ShmTransport::new().with_dir(&tmp.0);
        let addr = small.address_for(&ActorId::new("root"), None).unwrap();
        let mut listener = small.listen(&addr).unwrap();
        let client = big.open(&addr).await.unwrap();
        let server = listener.accept_shm().await.unwrap();
        let (mut ctx, _crx) = split(client);
        let (mut stx, mut srx) = split(server);
        let f = frame(1, 4096);
        assert!(matches!(
            stx.feed(&f),
            Err(ChannelError::Protocol(ProtocolError::FrameTooLarge {
                max: 1024,
                ..
            }))
        ));
        send(&mut *ctx, &f).await;
        assert!(matches!(
            srx.recv().await,
            Err(ChannelError::Protocol(ProtocolError::FrameTooLarge {
                max: 1024,
                ..
            }))
        ));
    })
    .await;
}

#[tokio::test]
async fn a_closed_or_dropped_sink_ends_the_peers_source_after_what_was_written() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new().with_dir(&tmp.0);
        let (client, server, _l, _) = pair(&t).await;
        let (mut ctx, _crx) = split(client);
        let (_stx, mut srx) = split(server);
        send(&mut *ctx, &frame(1, 10)).await;
        ctx.feed(&frame(2, 10)).unwrap(); // never flushed: lost with the sink
        drop(ctx);
        assert_eq!(srx.recv().await.unwrap().unwrap(), frame(1, 10));
        assert!(srx.recv().await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn a_dropped_source_breaks_the_peers_flush_and_closing_then_is_fine() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new().with_dir(&tmp.0);
        let (client, server, _l, _) = pair(&t).await;
        let (mut ctx, _crx) = split(client);
        let (_stx, srx) = split(server);
        drop(srx);
        ctx.feed(&frame(1, 10)).unwrap();
        match ctx.flush().await {
            Err(ChannelError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
            other => panic!("expected a broken pipe, got {other:?}"),
        }
        let (client, server, _l2, _) = pair(&t).await;
        let (mut ctx, _crx) = split(client);
        drop(server);
        ctx.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_dropped_channel_ends_the_peer_at_once_through_its_control_socket() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new()
            .with_dir(&tmp.0)
            .with_ring_size(MIN_RING_SIZE);
        let (client, server, _l, _) = pair(&t).await;
        let (mut stx, mut srx) = split(server);
        // The server waits on both halves: a read, and a write into a full ring.
        stx.feed(&frame(1, 64 << 10)).unwrap();
        let started = Instant::now();
        let waits = async {
            let (r, w) = tokio::join!(srx.recv(), stx.flush());
            (r, w)
        };
        let dropper = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(client);
        };
        let ((r, w), ()) = tokio::join!(waits, dropper);
        assert!(r.unwrap().is_none(), "the reader sees the end");
        assert!(
            matches!(w, Err(ChannelError::Io(ref e)) if e.kind() == io::ErrorKind::BrokenPipe),
            "the writer a broken pipe: {w:?}"
        );
        assert!(started.elapsed() < scaled(Duration::from_millis(20 + 100)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_halves_are_woken_and_ping_pong_loses_no_wake_up() {
    let tmp = TempDir::new();
    deadline(async {
        for spin in [Duration::ZERO, DEFAULT_SPIN] {
            let t = ShmTransport::new()
                .with_dir(&tmp.0)
                .with_ring_size(MIN_RING_SIZE)
                .with_spin(spin);
            let (client, server, _l, _) = pair(&t).await;
            let (mut ctx, mut crx) = split(client);
            let (mut stx, mut srx) = split(server);
            let rounds = 3000u64;
            let echo = tokio::spawn(async move {
                while let Some(f) = srx.recv().await.unwrap() {
                    send(&mut *stx, &f).await;
                }
                stx.close().await.unwrap();
            });
            for i in 0..rounds {
                // Some frames larger than the ring: both halves of both sides wait.
                let f = frame(i, if i % 100 == 0 { 3 * MIN_RING_SIZE } else { 64 });
                send(&mut *ctx, &f).await;
                assert_eq!(crx.recv().await.unwrap().unwrap(), f);
            }
            ctx.close().await.unwrap();
            assert!(crx.recv().await.unwrap().is_none());
            echo.await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_streaming_at_once_with_tiny_rings() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new()
            .with_dir(&tmp.0)
            .with_ring_size(MIN_RING_SIZE)
            .with_spin(Duration::ZERO);
        let (client, server, _l, _) = pair(&t).await;
        let n = 2000u64;
        let run = |ch: ShmChannel| async move {
            let (mut tx, mut rx) = split(ch);
            let writer = tokio::spawn(async move {
                for i in 0..n {
                    send(&mut *tx, &frame(i, (i as usize * 37) % 9000)).await;
                }
                tx.close().await.unwrap();
            });
            let mut i = 0;
            while let Some(f) = rx.recv().await.unwrap() {
                assert_eq!(f, frame(i, (i as usize * 37) % 9000));
                i += 1;
            }
            assert_eq!(i, n);
            writer.await.unwrap();
        };
        tokio::join!(run(client), run(server));
    })
    .await;
}

/// The segment of a channel, to scribble on as a hostile peer would.
fn scribble_u64(ch: &ShmChannel, off: usize, value: u64) {
    ring::tests::scribble_u64(&**ch.segment().mem(), off, value);
}

#[tokio::test]
async fn garbage_in_the_shared_header_is_a_protocol_error_on_that_channel() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new().with_dir(&tmp.0);
        // The connector writes ring 0 (its tail at the ring's offset 0): an impossible
        // tail reaches the acceptor's reader.
        let (client, server, _l, _) = pair(&t).await;
        scribble_u64(&client, ring::SEGMENT_HEADER, u64::MAX / 3);
        let (_stx, mut srx) = split(server);
        match srx.recv().await {
            Err(ChannelError::Protocol(ProtocolError::Decode(m))) => {
                assert!(m.contains("shared-memory ring"), "{m}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        // The acceptor's head of ring 0 (at the ring's offset 128): a head past the
        // tail reaches the connector's writer.
        let (client, server, _l2, _) = pair(&t).await;
        scribble_u64(&server, ring::SEGMENT_HEADER + 128, 12345);
        let (mut ctx, _crx) = split(client);
        ctx.feed(&frame(1, 10)).unwrap();
        assert!(matches!(
            ctx.flush().await,
            Err(ChannelError::Protocol(ProtocolError::Decode(_)))
        ));
        // Garbage in the data: what comes out is judged by the codec (a length above
        // the maximum, here), never trusted.
        let (client, server, _l3, _) = pair(&t).await;
        let (mut ctx, _crx) = split(client);
        send(&mut *ctx, &frame(1, 100)).await;
        scribble_u64(&server, ring::SEGMENT_HEADER + ring::RING_HEADER, u64::MAX);
        let (_stx, mut srx) = split(server);
        assert!(matches!(
            srx.recv().await,
            Err(ChannelError::Protocol(ProtocolError::FrameTooLarge { .. }))
        ));
    })
    .await;
}

/// A hand-made connecting side: what a peer sends, under the test's control.
struct RawPeer {
    sock: std::os::unix::net::UnixStream,
}

impl RawPeer {
    fn connect(addr: &Addr) -> RawPeer {
        RawPeer {
            sock: std::os::unix::net::UnixStream::connect(addr.endpoint()).unwrap(),
        }
    }

    fn send(&self, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
        os_wrappers::fdpass::send_with_fds(&self.sock, bytes, fds).unwrap();
    }
}

/// A memfd of `len` bytes with `seals`.
fn memfd_with(len: usize, seals: i32) -> OwnedFd {
    let fd = os_wrappers::memfd::create("test").unwrap();
    os_wrappers::memfd::set_len(&fd, len as u64).unwrap();
    if seals != 0 {
        os_wrappers::memfd::add_seals(&fd, seals).unwrap();
    }
    fd
}

fn setup_msg(cap: usize) -> Vec<u8> {
    let mut m = b"BROODSHM".to_vec();
    m.extend_from_slice(&ring::VERSION.to_le_bytes());
    m.extend_from_slice(&(cap as u32).to_le_bytes());
    m
}

#[tokio::test]
async fn setups_that_break_the_rules_are_refused_and_the_listener_goes_on() {
    use os_wrappers::memfd::{SEAL_GROW, SEAL_SEAL, SEAL_SHRINK};
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new().with_dir(&tmp.0);
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let mut listener = t.listen(&addr).unwrap();
        let cap = MIN_RING_SIZE;
        let len = ring::segment_len(cap).unwrap();
        let all = SEAL_SHRINK | SEAL_GROW | SEAL_SEAL;
        fn bell() -> OwnedFd {
            os_wrappers::eventfd::new().unwrap()
        }

        // A silent peer first: it must not hold up the others.
        let silent = RawPeer::connect(&addr);

        type Case<'a> = (&'static str, Box<dyn Fn(&RawPeer) + 'a>);
        let cases: Vec<Case> = vec![
            (
                "not a brood",
                Box::new(|p| p.send(b"GET / HTTP/1.1\r\n", &[])),
            ),
            (
                "exactly three",
                Box::new(move |p| p.send(&setup_msg(cap), &[bell().as_fd()])),
            ),
            (
                "seals",
                Box::new(move |p| {
                    let (m, a, b) = (memfd_with(len, 0), bell(), bell());
                    p.send(&setup_msg(cap), &[m.as_fd(), a.as_fd(), b.as_fd()]);
                }),
            ),
            (
                "seals",
                Box::new(move |p| {
                    // Sealed, but not against shrinking: a mapping could fault.
                    let (m, a, b) = (memfd_with(len, SEAL_GROW | SEAL_SEAL), bell(), bell());
                    p.send(&setup_msg(cap), &[m.as_fd(), a.as_fd(), b.as_fd()]);
                }),
            ),
            (
                "bytes",
                Box::new(move |p| {
                    let (m, a, b) = (memfd_with(len + 4096, all), bell(), bell());
                    p.send(&setup_msg(cap), &[m.as_fd(), a.as_fd(), b.as_fd()]);
                }),
            ),
            (
                "not a sealable",
                Box::new(move |p| {
                    let f = std::fs::File::open("/proc/self/status").unwrap();
                    let (a, b) = (bell(), bell());
                    p.send(&setup_msg(cap), &[f.as_fd(), a.as_fd(), b.as_fd()]);
                }),
            ),
            (
                "not an eventfd",
                Box::new(move |p| {
                    let (r, _w) = std::io::pipe().unwrap();
                    let (m, b) = (memfd_with(len, all), bell());
                    p.send(&setup_msg(cap), &[m.as_fd(), r.as_fd(), b.as_fd()]);
                }),
            ),
            (
                "magic",
                Box::new(move |p| {
                    // Right shape, but the segment's own header is not a brood one.
                    let (m, a, b) = (memfd_with(len, all), bell(), bell());
                    p.send(&setup_msg(cap), &[m.as_fd(), a.as_fd(), b.as_fd()]);
                }),
            ),
            (
                "capacity",
                Box::new(|p| p.send(&setup_msg(3 * MIN_RING_SIZE), &[])),
            ),
            (
                "left before",
                Box::new(|p| p.sock.shutdown(std::net::Shutdown::Both).unwrap()),
            ),
        ];
        for (want, make) in &cases {
            let peer = RawPeer::connect(&addr);
            make(&peer);
            match listener.accept_shm().await {
                Err(TransportError::Channel(ChannelError::Protocol(ProtocolError::Decode(m)))) => {
                    assert!(m.contains(want), "expected {want:?} in {m:?}")
                }
                other => panic!("{want}: expected a refused setup, got {other:?}"),
            }
        }
        // A good peer still gets through, the silent one still waiting.
        let client = t.open(&addr).await.unwrap();
        let server = listener.accept_shm().await.unwrap();
        let (mut ctx, _) = split(client);
        let (_, mut srx) = split(server);
        send(&mut *ctx, &frame(5, 5)).await;
        assert_eq!(srx.recv().await.unwrap().unwrap(), frame(5, 5));
        drop(silent);
    })
    .await;
}

/// The device and inode of the file behind `fd`: the same pair means the same file.
fn ino(fd: impl AsFd) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::File::from(fd.as_fd().try_clone_to_owned().unwrap());
    let m = f.metadata().unwrap();
    (m.dev(), m.ino())
}

#[tokio::test]
async fn descriptors_cross_with_their_frames_through_the_control_socket() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new()
            .with_dir(&tmp.0)
            .with_ring_size(MIN_RING_SIZE);
        let (client, server, _l, _a) = pair(&t).await;
        let (mut ctx, _crx) = split(client);
        let (_stx, mut srx) = split(server);
        let f1 = std::fs::File::open("/proc/self/status").unwrap();
        let plain = frame(1, 10);
        // Larger than the ring: its bytes stream through in pieces after its descriptor.
        let mut with = frame(2, 3 * MIN_RING_SIZE);
        with.fds = spawn_api::Fds::from(vec![OwnedFd::from(f1.try_clone().unwrap())]);
        let send = async {
            for _ in 0..20 {
                for f in [&plain, &with] {
                    ctx.feed(f).unwrap();
                }
                ctx.flush().await.unwrap();
            }
        };
        let recv = async {
            for i in 0..40 {
                let got = srx.recv().await.unwrap().unwrap();
                if i % 2 == 0 {
                    assert_eq!(got, plain);
                } else {
                    assert_eq!(got.payload, with.payload);
                    let fds = got.fds.borrowed();
                    assert_eq!(fds.len(), 1);
                    assert_eq!(ino(fds[0]), ino(&f1));
                }
            }
        };
        tokio::join!(send, recv);
    })
    .await;
}

/// A hand-made peer with an honest setup whose ring we write raw bytes into, and whose
/// control socket we send raw messages on.
struct HandPeer {
    peer: RawPeer,
    prod: ring::Producer,
    _seg: ring::Segment,
}

async fn hand_peer(listener: &mut ShmListener, addr: &Addr) -> (HandPeer, Box<dyn FrameSource>) {
    let cap = MIN_RING_SIZE;
    let len = ring::segment_len(cap).unwrap();
    let fd = memfd_with(len, 0);
    let map = os_wrappers::mmap::SharedMapping::map(&fd, len).unwrap();
    let seg = ring::Segment::init(Arc::new(map), cap).unwrap();
    os_wrappers::memfd::add_seals(
        &fd,
        os_wrappers::memfd::SEAL_SHRINK
            | os_wrappers::memfd::SEAL_GROW
            | os_wrappers::memfd::SEAL_SEAL,
    )
    .unwrap();
    let (a, c) = (
        os_wrappers::eventfd::new().unwrap(),
        os_wrappers::eventfd::new().unwrap(),
    );
    let peer = RawPeer::connect(addr);
    peer.send(&setup_msg(cap), &[fd.as_fd(), a.as_fd(), c.as_fd()]);
    let server = listener.accept_shm().await.unwrap();
    let (stx, srx) = split(server);
    std::mem::forget(stx);
    let (prod, _cons) = seg.ends(ring::Side::Connector);
    (
        HandPeer {
            peer,
            prod,
            _seg: seg,
        },
        srx,
    )
}

/// A frame whose prefix announces `count` descriptors.
fn lying_frame(count: u8) -> Vec<u8> {
    let mut header = bytes::BytesMut::new();
    spawn_api::codec::encode_header(&Msg::Yield { cid: 1 }, &mut header).unwrap();
    let body = 1 + header.len();
    let mut out = (body as u32 | spawn_api::codec::FDS_FLAG)
        .to_le_bytes()
        .to_vec();
    out.push(count);
    out.extend_from_slice(&header);
    out
}

#[tokio::test]
async fn a_frame_announcing_descriptors_that_were_not_sent_is_a_protocol_error() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new().with_dir(&tmp.0);
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let mut listener = t.listen(&addr).unwrap();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        for (count, sent) in [(1u8, 0usize), (3, 2), (0, 0), (99, 1)] {
            let (mut hp, mut srx) = hand_peer(&mut listener, &addr).await;
            if sent > 0 {
                let fds: Vec<_> = (0..sent).map(|_| f.as_fd()).collect();
                hp.peer.send(b"F", &fds);
            }
            let bytes = lying_frame(count);
            assert_eq!(
                hp.prod.write(&[std::io::IoSlice::new(&bytes)]).unwrap(),
                bytes.len()
            );
            match srx.recv().await {
                Err(ChannelError::Protocol(ProtocolError::Decode(m))) => {
                    assert!(m.contains("descriptors"), "{count}/{sent}: {m}")
                }
                other => panic!("{count} announced, {sent} sent: {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn control_messages_other_than_descriptors_or_too_many_of_them_end_the_channel() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new().with_dir(&tmp.0);
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let mut listener = t.listen(&addr).unwrap();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        // A plain byte; the mark without descriptors; descriptors without the mark; a
        // flood.
        let eight: Vec<_> = (0..8).map(|_| f.as_fd()).collect();
        let cases: [&dyn Fn(&RawPeer); 4] = [
            &|p: &RawPeer| {
                use std::io::Write;
                (&p.sock).write_all(b"!").unwrap()
            },
            &|p: &RawPeer| p.send(b"F", &[]),
            &|p: &RawPeer| p.send(b"x", &[f.as_fd()]),
            &|p: &RawPeer| {
                for _ in 0..9 {
                    p.send(b"F", &eight);
                }
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let (hp, mut srx) = hand_peer(&mut listener, &addr).await;
            case(&hp.peer);
            match srx.recv().await {
                Err(ChannelError::Protocol(ProtocolError::Decode(m))) => {
                    assert!(m.contains("control socket"), "case {i}: {m}")
                }
                other => panic!("case {i}: expected a protocol error, got {other:?}"),
            }
        }
    })
    .await;
}

/// nextest runs each test in a process of its own, so setting the variable here touches
/// no other test.
#[test]
#[allow(unsafe_code)]
fn the_spin_time_comes_from_the_environment_when_valid() {
    let set = |v: &str| {
        // SAFETY: no other thread of this test process reads the environment while it
        // changes (nextest gives the test a process of its own).
        unsafe { std::env::set_var(SPIN_ENV, v) }
    };
    set("0");
    assert_eq!(ShmTransport::new().spin(), Duration::ZERO);
    set(" 7 ");
    assert_eq!(ShmTransport::new().spin(), Duration::from_micros(7));
    set("lots");
    assert_eq!(ShmTransport::new().spin(), DEFAULT_SPIN);
    // SAFETY: as above.
    unsafe { std::env::remove_var(SPIN_ENV) };
    assert_eq!(ShmTransport::new().spin(), DEFAULT_SPIN);
}

#[tokio::test]
async fn accept_is_cancel_safe() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new().with_dir(&tmp.0);
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let mut listener = t.listen(&addr).unwrap();
        // A connection accepted, its setup not yet read, when the accept is dropped.
        let sock = std::os::unix::net::UnixStream::connect(addr.endpoint()).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), listener.accept_shm())
                .await
                .is_err()
        );
        assert_eq!(listener.pending.len(), 1, "kept in the listener");
        drop(sock);
        assert!(listener.accept_shm().await.is_err(), "its end is reported");
        let client = t.open(&addr).await.unwrap();
        let _server = listener.accept_shm().await.unwrap();
        drop(client);
    })
    .await;
}

#[test]
fn addresses_of_a_tree_share_the_root_directory_and_cleanup_removes_them() {
    let tmp = TempDir::new();
    let t = ShmTransport::new().with_dir(&tmp.0);
    let root = t.address_for(&ActorId::new("root"), None).unwrap();
    let child = t.address_for(&ActorId::new("child"), Some(&root)).unwrap();
    let grandchild = t.address_for(&ActorId::new("gc"), Some(&child)).unwrap();
    assert_eq!(root.transport(), KEY);
    assert!(root.endpoint().ends_with(".shm.sock"));
    let dir = |a: &Addr| Path::new(a.endpoint()).parent().unwrap().to_path_buf();
    assert_eq!(dir(&root), dir(&child));
    assert_eq!(dir(&child), dir(&grandchild));
    assert!(dir(&root).starts_with(&tmp.0));
    assert_eq!(
        fs::metadata(dir(&root)).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for bad in [
        Addr::new("uds", "/a/b.sock"),
        Addr::new(KEY, "relative/x.sock"),
    ] {
        assert!(matches!(
            t.address_for(&ActorId::new("x"), Some(&bad)),
            Err(TransportError::BadAddr { .. })
        ));
    }
    let long = ShmTransport::new().with_dir(tmp.0.join("d".repeat(90)));
    assert!(matches!(
        long.address_for(&ActorId::new("root"), None),
        Err(TransportError::BadAddr { reason, .. }) if reason.contains("at most")
    ));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l_root = t.bind(&root).await.unwrap();
        let l_child = t.bind(&child).await.unwrap();
        assert!(matches!(
            t.bind(&child).await,
            Err(TransportError::Io { source, .. }) if source.kind() == io::ErrorKind::AddrInUse
        ));
        // A killed child leaves its socket file: the parent's cleanup removes it.
        std::mem::forget(l_child);
        assert!(Path::new(child.endpoint()).exists());
        t.cleanup(&child);
        t.cleanup(&child);
        assert!(!Path::new(child.endpoint()).exists());
        // A stale file is replaced by a new bind.
        drop(std::os::unix::net::UnixListener::bind(grandchild.endpoint()).unwrap());
        let l_gc = t.bind(&grandchild).await.unwrap();
        drop(l_gc);
        assert!(
            !Path::new(grandchild.endpoint()).exists(),
            "unlinked on drop"
        );
        drop(l_root);
    });
    t.cleanup_tree(&root);
    assert!(!dir(&root).exists(), "the tree directory is removed");
    assert_eq!(t.key(), "shm");
    assert_eq!(t.max_frame(), DEFAULT_MAX_FRAME);
    assert!(t.runtime_dir().unwrap().starts_with(&tmp.0));
    assert!(ShmTransport::default().ring_size() == DEFAULT_RING_SIZE);
    assert_eq!(
        ShmTransport::new().with_ring_size(usize::MAX).ring_size(),
        MAX_RING_SIZE
    );
    assert_eq!(ShmTransport::new().with_ring_size(5000).ring_size(), 8192);
}

// --- Peers in other processes: this test binary run again ----------------------------

/// Set in a child run of this binary: what the child is to do.
const CHILD_ENV: &str = "IPC_SHM_TEST_CHILD";

/// Run this binary again as `what` (the child runs [`child_entry`] only).
fn child(what: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, what)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Wait for the child's line starting with `word`; the rest of it.
fn child_says(c: &mut std::process::Child, word: &str) -> String {
    let out = c.stdout.as_mut().unwrap();
    let mut lines = BufReader::new(out).lines();
    loop {
        let line = lines
            .next()
            .expect("the child ended without a word")
            .unwrap();
        // libtest's own "test ... " may come first on the line.
        if let Some((_, rest)) = line.split_once(word) {
            return rest.trim().to_owned();
        }
    }
}

/// The child's side: does nothing in a normal test run.
#[test]
fn child_entry() {
    let Ok(what) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(addr) = what.strip_prefix("peer:") {
        // Connect, send a frame and half of another, say so, and wait to be killed.
        rt.block_on(async {
            let addr: Addr = addr.parse().unwrap();
            let ch = ShmTransport::new().open(&addr).await.unwrap();
            let (mut tx, _rx) = split(ch);
            send(&mut *tx, &frame(1, 100)).await;
            println!("ready");
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
    } else if what == "leaks" {
        leak_check(&rt);
        println!("clean");
    }
}

#[tokio::test]
async fn a_peer_process_killed_while_connected_ends_the_channel_within_100_ms() {
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new().with_dir(&tmp.0);
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let mut listener = t.listen(&addr).unwrap();
        let mut peer = child(&format!("peer:{addr}"));
        let server = listener.accept_shm().await.unwrap();
        assert_eq!(server.peer().pid, Some(peer.id()));
        let (mut stx, mut srx) = split(server);
        assert_eq!(srx.recv().await.unwrap().unwrap(), frame(1, 100));
        // Both halves wait: the reader for a frame, the writer on a full ring.
        stx.feed(&frame(2, DEFAULT_RING_SIZE * 2)).unwrap();
        let recv = tokio::spawn(async move {
            let r = srx.recv().await;
            (r, Instant::now())
        });
        let flush = tokio::spawn(async move {
            let r = stx.flush().await;
            (r, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let killed = Instant::now();
        peer.kill().unwrap();
        let (r, r_at) = recv.await.unwrap();
        let (w, w_at) = flush.await.unwrap();
        peer.wait().unwrap();
        assert!(r.unwrap().is_none(), "the reader sees the end");
        assert!(
            matches!(w, Err(ChannelError::Io(ref e)) if e.kind() == io::ErrorKind::BrokenPipe),
            "{w:?}"
        );
        let bound = scaled(Duration::from_millis(100));
        assert!(r_at - killed < bound, "reader: {:?}", r_at - killed);
        assert!(w_at - killed < bound, "writer: {:?}", w_at - killed);
    })
    .await;
}

/// Descriptors and shared mappings of this process, by what they are.
fn resources() -> (usize, usize) {
    let fds = fs::read_dir("/proc/self/fd").unwrap().count();
    let maps = fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:brood-shm"))
        .count();
    (fds, maps)
}

/// In a process of its own (a child run): channels opened, used and dropped leave no
/// descriptor, mapping or file behind.
fn leak_check(rt: &tokio::runtime::Runtime) {
    let tmp = TempDir::new();
    rt.block_on(async {
        let t = ShmTransport::new().with_dir(&tmp.0);
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let listener = t.listen(&addr).unwrap();
        drop(listener);
        let before = resources();
        {
            let mut listener = t.listen(&addr).unwrap();
            let mut channels = Vec::new();
            for i in 0..10 {
                let client = t.open(&addr).await.unwrap();
                let server = listener.accept_shm().await.unwrap();
                let (mut ctx, crx) = split(client);
                let (stx, mut srx) = split(server);
                send(&mut *ctx, &frame(i, 1000)).await;
                assert!(srx.recv().await.unwrap().is_some());
                if i % 2 == 0 {
                    channels.push((ctx, crx, stx, srx));
                }
            }
            assert!(resources().1 >= 10, "mapped while in use");
            drop(channels);
            drop(listener);
        }
        tokio::task::yield_now().await;
        assert_eq!(resources(), before, "(descriptors, memfd mappings) after");
        assert!(!Path::new(addr.endpoint()).exists());
        t.cleanup_tree(&addr);
    });
}

#[test]
fn nothing_is_left_open_or_mapped_after_channels_are_dropped() {
    let mut c = child("leaks");
    assert_eq!(child_says(&mut c, "clean"), "");
    assert!(c.wait().unwrap().success());
}

// --- Another user ---------------------------------------------------------------------

fn running_as_root(why: &str) -> bool {
    if peercred::effective_uid() == 0 {
        return true;
    }
    eprintln!("skipped: needs root to {why}");
    false
}

#[allow(unsafe_code)]
mod foreign {
    //! Processes of another user: raw system calls after a fork (test only).

    use super::*;

    /// A forked process that becomes `uid` and then either connects to `path` (and waits for
    /// the connection to close) or listens there (and waits to be killed). Raw system calls
    /// only after the fork: the test runner is multi-threaded.
    pub(super) struct ForeignPeer(libc::pid_t);

    impl ForeignPeer {
        pub(super) fn start(uid: libc::uid_t, path: &Path, listen: bool) -> ForeignPeer {
            // Prepared before the fork: the child may not allocate.
            let mut sa = sockaddr(path);
            let sa_len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            let ready = os_wrappers::eventfd::new().unwrap();
            let ready_raw = std::os::fd::AsRawFd::as_raw_fd(&ready);
            let sa_ptr = (&raw mut sa).cast::<libc::sockaddr>();
            // The child's whole life: raw calls on memory prepared above.
            let pid = fork_child(move || {
                // SAFETY: raw system calls on values owned by this single-threaded child.
                unsafe {
                    if libc::syscall(libc::SYS_setgid, uid) != 0
                        || libc::syscall(libc::SYS_setuid, uid) != 0
                    {
                        libc::_exit(2);
                    }
                    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    if fd < 0 {
                        libc::_exit(3);
                    }
                    if listen {
                        if libc::bind(fd, sa_ptr, sa_len) != 0 || libc::listen(fd, 8) != 0 {
                            libc::_exit(4);
                        }
                        let one = 1u64;
                        libc::write(ready_raw, (&raw const one).cast(), 8);
                        loop {
                            let c = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
                            if c < 0 {
                                libc::_exit(5);
                            }
                        }
                    }
                    if libc::connect(fd, sa_ptr, sa_len) != 0 {
                        libc::_exit(3);
                    }
                    let mut b = [0u8; 1];
                    // Returns 0 when the refusing side closes the connection.
                    libc::read(fd, b.as_mut_ptr().cast(), 1);
                    libc::_exit(0);
                }
            });
            if listen {
                // Wait until it listens.
                let deadline = Instant::now() + Duration::from_secs(10);
                while !os_wrappers::eventfd::drain(&ready).unwrap() {
                    assert!(
                        Instant::now() < deadline,
                        "the foreign listener never started"
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            ForeignPeer(pid)
        }

        /// Wait for the peer and return its exit code (-1 if it did not exit normally).
        pub(super) fn wait(&self) -> i32 {
            let mut status = 0;
            // SAFETY: `status` is a live int; the pid is our child, waited for only here.
            let r = unsafe { libc::waitpid(self.0, &mut status, 0) };
            if r == self.0 && libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            }
        }

        pub(super) fn kill(&self) {
            // SAFETY: signals our own child, which has not been waited for yet.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
            self.wait();
        }
    }

    fn sockaddr(path: &Path) -> libc::sockaddr_un {
        // SAFETY: an all-zero sockaddr_un is a valid (empty) address.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_encoded_bytes();
        assert!(bytes.len() < sa.sun_path.len());
        for (d, s) in sa.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        sa
    }

    /// Fork; the child runs `body`, which must only make raw system calls and `_exit`.
    fn fork_child(body: impl FnOnce()) -> libc::pid_t {
        // SAFETY: fork has no memory-safety preconditions; the child runs `body`, which
        // makes only async-signal-safe system calls on memory prepared before the fork and
        // ends with _exit, and never returns here.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            body();
            // SAFETY: ending the child without running anything of the parent's.
            unsafe { libc::_exit(1) };
        }
        pid
    }
}

use foreign::ForeignPeer;

#[tokio::test]
async fn a_peer_of_another_uid_is_refused_on_both_ends() {
    if !running_as_root("run a peer as another user") {
        return;
    }
    let tmp = TempDir::new();
    deadline(async {
        let t = ShmTransport::new().with_dir(&tmp.0);
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let mut listener = t.listen(&addr).unwrap();
        let path = PathBuf::from(addr.endpoint());
        // The runtime directory is private by design; this test opens it up on purpose
        // so that another user can reach the socket and the credential check is what
        // refuses it.
        for d in [tmp.0.as_path(), path.parent().unwrap()] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        let peer = ForeignPeer::start(65534, &path, false);
        match listener.accept_shm().await {
            Err(TransportError::PeerRefused { peer_uid, our_uid }) => {
                assert_eq!((peer_uid, our_uid), (65534, 0))
            }
            other => panic!("expected PeerRefused, got {other:?}"),
        }
        let code = tokio::task::spawn_blocking(move || peer.wait())
            .await
            .unwrap();
        assert_eq!(code, 0, "the refused peer sees its connection closed");

        // A listener of another user: the connecting side refuses it.
        let theirs = path.parent().unwrap().join("theirs.shm.sock");
        let foreign = ForeignPeer::start(65534, &theirs, true);
        let their_addr = Addr::new(KEY, theirs.to_str().unwrap());
        match t.open(&their_addr).await {
            Err(TransportError::PeerRefused { peer_uid, our_uid }) => {
                assert_eq!((peer_uid, our_uid), (65534, 0))
            }
            other => panic!("expected PeerRefused, got {other:?}"),
        }
        foreign.kill();
    })
    .await;
}
