use super::*;
use bytes::Bytes;
use os_wrappers::runtime_dir::in_memory;
use spawn_api::{Msg, ProtocolError};
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory path under /tmp (not created), removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "uds-test-{}-{}",
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

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn runtime_dir_is_created_private_and_checked() {
    let tmp = TempDir::new();
    let t = UdsTransport::new().with_dir(&tmp.0);
    let dir = t.runtime_dir().unwrap();
    let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700);

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    match t.runtime_dir() {
        Err(TransportError::RuntimeDir { reason, .. }) => {
            assert!(reason.contains("755"), "{reason}")
        }
        other => panic!("expected RuntimeDir error, got {other:?}"),
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();

    let file = tmp.0.join("plain-file");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(
        UdsTransport::new().with_dir(&file).runtime_dir(),
        Err(TransportError::RuntimeDir { .. })
    ));
}

#[test]
fn runtime_dir_owned_by_another_user_is_refused() {
    if our_uid() != 0 {
        eprintln!("skipped: needs root to chown a directory to another user");
        return;
    }
    let tmp = TempDir::new();
    fs::DirBuilder::new().mode(0o700).create(&tmp.0).unwrap();
    std::os::unix::fs::chown(&tmp.0, Some(65534), Some(65534)).unwrap();
    match UdsTransport::new().with_dir(&tmp.0).runtime_dir() {
        Err(TransportError::RuntimeDir { reason, .. }) => {
            assert!(reason.contains("65534"), "{reason}")
        }
        other => panic!("expected RuntimeDir error, got {other:?}"),
    }
}

#[test]
fn the_default_directory_is_private_to_this_user_and_in_memory_when_possible() {
    if std::env::var_os(RUNTIME_DIR_ENV).is_some() || std::env::var_os("XDG_RUNTIME_DIR").is_some()
    {
        eprintln!("skipped: the environment chooses the directory");
        return;
    }
    let d = default_runtime_dir();
    let name = d.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, format!("brood-{}", nix::unistd::geteuid()));
    if !in_memory(Path::new("/tmp")) && in_memory(Path::new("/dev/shm")) {
        assert!(d.starts_with("/dev/shm"), "{}", d.display());
    } else {
        assert!(d.starts_with("/tmp"), "{}", d.display());
    }
}

#[test]
fn addresses_of_a_tree_share_the_root_directory() {
    let tmp = TempDir::new();
    let t = UdsTransport::new().with_dir(&tmp.0);
    let root = t.address_for(&ActorId::new("root"), None).unwrap();
    let child = t.address_for(&ActorId::new("child"), Some(&root)).unwrap();
    let grandchild = t.address_for(&ActorId::new("gc"), Some(&child)).unwrap();
    let dir = |a: &Addr| Path::new(a.endpoint()).parent().unwrap().to_path_buf();
    assert_eq!(dir(&root), dir(&child));
    assert_eq!(dir(&child), dir(&grandchild));
    assert!(dir(&root).starts_with(&tmp.0));
    assert_eq!(fs::metadata(dir(&root)).unwrap().mode() & 0o777, 0o700);
    assert!(matches!(
        t.address_for(&ActorId::new("x"), Some(&Addr::new("shm", "/a"))),
        Err(TransportError::BadAddr { .. })
    ));
}

#[test]
fn too_long_a_path_is_a_typed_error() {
    let tmp = TempDir::new();
    let long = tmp.0.join("d".repeat(90));
    let t = UdsTransport::new().with_dir(&long);
    match t.address_for(&ActorId::new("root"), None) {
        Err(TransportError::BadAddr { reason, .. }) => {
            assert!(reason.contains("at most"), "{reason}")
        }
        other => panic!("expected BadAddr, got {other:?}"),
    }
}

#[test]
fn frames_flow_both_ways_and_the_socket_is_private_and_removed() {
    let tmp = TempDir::new();
    rt().block_on(async {
        let t = UdsTransport::new().with_dir(&tmp.0);
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let mut listener = t.bind(&addr).await.unwrap();
        let path = PathBuf::from(addr.endpoint());
        let dir_mode = fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(dir_mode, 0o700, "the socket's tree directory is private");
        assert_eq!(listener.local_addr(), &addr);

        let client = t.connect(&addr).await.unwrap();
        let server = listener.accept().await.unwrap();
        assert_eq!(server.peer().pid, Some(std::process::id()));
        assert_eq!(client.peer().uid, Some(our_uid()));
        let (mut ctx, mut crx) = client.split();
        let (mut stx, mut srx) = server.split();

        let big = Frame::with_payload(Msg::Yield { cid: 1 }, Bytes::from(vec![5u8; 3 << 20]));
        let small = Frame::with_payload(Msg::Return { cid: 1 }, Bytes::from_static(b"ok"));
        ctx.feed(&big).unwrap();
        ctx.feed(&small).unwrap();
        let send = async {
            ctx.flush().await.unwrap();
        };
        let recv = async {
            assert_eq!(srx.recv().await.unwrap().unwrap(), big);
            assert_eq!(srx.recv().await.unwrap().unwrap(), small);
        };
        tokio::join!(send, recv);

        stx.feed(&small).unwrap();
        stx.close().await.unwrap();
        assert_eq!(crx.recv().await.unwrap().unwrap(), small);
        assert!(crx.recv().await.unwrap().is_none(), "clean end after close");

        drop(listener);
        assert!(!path.exists(), "listener drop unlinks the socket");
        t.cleanup_tree(&addr);
        assert!(!path.parent().unwrap().exists(), "tree directory removed");
    });
}

fn ino(fd: impl std::os::fd::AsFd) -> (u64, u64) {
    let st = nix::sys::stat::fstat(fd.as_fd()).unwrap();
    (st.st_dev, st.st_ino)
}

/// A channel pair over a fresh listener: (client, server).
async fn pair(t: &UdsTransport) -> (Box<dyn Channel>, Box<dyn Channel>, Box<dyn Listener>) {
    let addr = t.address_for(&ActorId::new("root"), None).unwrap();
    let mut listener = t.bind(&addr).await.unwrap();
    let client = t.connect(&addr).await.unwrap();
    let server = listener.accept().await.unwrap();
    (client, server, listener)
}

#[test]
fn descriptors_cross_with_their_frames_among_ordinary_ones() {
    let tmp = TempDir::new();
    rt().block_on(async {
        let t = UdsTransport::new().with_dir(&tmp.0);
        let (client, server, _l) = pair(&t).await;
        let (mut ctx, _crx) = client.split();
        let (_stx, mut srx) = server.split();
        let f1 = std::fs::File::open("/proc/self/status").unwrap();
        let f2 = std::fs::File::open("/proc/self/stat").unwrap();
        let plain = Frame::with_payload(Msg::Yield { cid: 1 }, Bytes::from_static(b"a"));
        let mut with = Frame::with_payload(Msg::Yield { cid: 1 }, Bytes::from(vec![9u8; 100_000]));
        with.fds = spawn_api::Fds::from(vec![
            std::os::fd::OwnedFd::from(f1.try_clone().unwrap()),
            std::os::fd::OwnedFd::from(f2.try_clone().unwrap()),
        ]);
        // Batched: plain, with, plain, with (one flush), then more after.
        for f in [&plain, &with, &plain, &with] {
            ctx.feed(f).unwrap();
        }
        let send = async { ctx.flush().await.unwrap() };
        let recv = async {
            for i in 0..4 {
                let got = srx.recv().await.unwrap().unwrap();
                assert_eq!(got.msg, plain.msg);
                if i % 2 == 0 {
                    assert_eq!(got.payload, plain.payload);
                    assert!(got.fds.is_empty());
                } else {
                    assert_eq!(got.payload.len(), 100_000);
                    let fds = got.fds.borrowed();
                    assert_eq!(fds.len(), 2);
                    assert_eq!(ino(fds[0]), ino(&f1), "the same open file, in order");
                    assert_eq!(ino(fds[1]), ino(&f2));
                }
            }
        };
        tokio::join!(send, recv);
    });
}

/// A raw peer on the data socket: the handshake is the runtime's business, frames are
/// the transport's, so a connected raw socket is a full peer here.
async fn raw_peer(t: &UdsTransport) -> (std::os::unix::net::UnixStream, Box<dyn FrameSource>) {
    let addr = t.address_for(&ActorId::new("root"), None).unwrap();
    let mut listener = t.bind(&addr).await.unwrap();
    let raw = std::os::unix::net::UnixStream::connect(addr.endpoint()).unwrap();
    let server = listener.accept().await.unwrap();
    let (_stx, srx) = server.split();
    std::mem::forget(_stx);
    (raw, srx)
}

/// A frame whose prefix says "descriptors" in this format: flag, count byte, header.
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

#[test]
fn a_frame_announcing_descriptors_that_did_not_come_is_a_protocol_error() {
    let tmp = TempDir::new();
    rt().block_on(async {
        let t = UdsTransport::new().with_dir(&tmp.0);
        for (count, attach) in [(2u8, 1usize), (1, 0), (0, 0), (200, 1)] {
            let (raw, mut srx) = raw_peer(&t).await;
            let f = std::fs::File::open("/proc/self/status").unwrap();
            let fds: Vec<_> = (0..attach).map(|_| f.as_fd()).collect();
            let bytes = lying_frame(count);
            os_wrappers::fdpass::send_with_fds(&raw, &bytes, &fds).unwrap();
            match tokio::time::timeout(std::time::Duration::from_secs(5), srx.recv()).await {
                Ok(Err(ChannelError::Protocol(ProtocolError::Decode(m)))) => {
                    assert!(m.contains("descriptors"), "{count}/{attach}: {m}")
                }
                other => panic!("{count} announced, {attach} sent: {other:?}"),
            }
        }
    });
}

#[test]
fn a_peer_flooding_descriptors_no_frame_claims_is_cut_off() {
    let tmp = TempDir::new();
    rt().block_on(async {
        let t = UdsTransport::new().with_dir(&tmp.0);
        let (raw, mut srx) = raw_peer(&t).await;
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let eight: Vec<_> = (0..8).map(|_| f.as_fd()).collect();
        // One byte at a time of a 1000-byte frame that never completes, each byte with
        // eight descriptors: the reader keeps reading (and keeping descriptors) until
        // the bound trips.
        let prefix = 1000u32.to_le_bytes();
        let mut sent = 0;
        for i in 0..10 {
            let byte = prefix.get(i).copied().unwrap_or(0);
            if os_wrappers::fdpass::send_with_fds(&raw, &[byte], &eight).is_ok() {
                sent += 1;
            }
        }
        assert!(sent >= 9, "the socket took the messages");
        match tokio::time::timeout(std::time::Duration::from_secs(5), srx.recv()).await {
            Ok(Err(ChannelError::Io(e))) => {
                assert!(
                    e.to_string().contains("descriptors nobody asked for"),
                    "{e}"
                )
            }
            other => panic!("expected the reader to give up: {other:?}"),
        }
    });
}

#[test]
fn a_frame_above_the_maximum_is_refused_on_both_ends() {
    let tmp = TempDir::new();
    rt().block_on(async {
        let small = UdsTransport::new().with_dir(&tmp.0).with_max_frame(1024);
        let big = UdsTransport::new().with_dir(&tmp.0);
        let addr = small.address_for(&ActorId::new("root"), None).unwrap();
        let mut listener = small.bind(&addr).await.unwrap();
        let client = big.connect(&addr).await.unwrap();
        let server = listener.accept().await.unwrap();
        let (mut ctx, _crx) = client.split();
        let (mut stx, mut srx) = server.split();

        let frame = Frame::with_payload(Msg::Yield { cid: 1 }, Bytes::from(vec![0u8; 4096]));
        assert!(matches!(
            stx.feed(&frame),
            Err(ChannelError::Protocol(ProtocolError::FrameTooLarge {
                max: 1024,
                ..
            }))
        ));
        ctx.feed(&frame).unwrap();
        ctx.flush().await.unwrap();
        assert!(matches!(
            srx.recv().await,
            Err(ChannelError::Protocol(ProtocolError::FrameTooLarge {
                max: 1024,
                ..
            }))
        ));
    });
}

#[test]
fn a_stale_socket_file_is_replaced_but_a_live_one_is_not() {
    let tmp = TempDir::new();
    rt().block_on(async {
        let t = UdsTransport::new().with_dir(&tmp.0);
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let path = PathBuf::from(addr.endpoint());
        // A socket file nobody listens on, as a killed actor leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = t.bind(&addr).await.unwrap();
        match t.bind(&addr).await {
            Err(TransportError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::AddrInUse)
            }
            other => panic!("expected AddrInUse, got {other:?}"),
        }
        drop(live);
        t.cleanup(&addr);
        assert!(!path.exists());
    });
}

#[test]
fn stale_tree_directories_of_dead_roots_are_removed() {
    let tmp = TempDir::new();
    let t = UdsTransport::new().with_dir(&tmp.0);
    let dir = t.runtime_dir().unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale = dir.join(format!("t{dead_pid}-0000beef"));
    fs::DirBuilder::new().mode(0o700).create(&stale).unwrap();
    drop(std::os::unix::net::UnixListener::bind(stale.join("00.sock")).unwrap());
    let alive = dir.join(format!("t{}-0000cafe", std::process::id()));
    fs::DirBuilder::new().mode(0o700).create(&alive).unwrap();

    t.address_for(&ActorId::new("root"), None).unwrap();
    assert!(!stale.exists(), "a dead root's tree is removed");
    assert!(alive.exists(), "a live root's tree is kept");
}

#[test]
fn a_peer_of_another_uid_is_refused() {
    if our_uid() != 0 {
        eprintln!("skipped: needs root to run a peer as another user");
        return;
    }
    // The runtime directory is private by design; this test opens one up on purpose
    // so that another user can reach the socket and the credential check is what
    // refuses it.
    let tmp = TempDir::new();
    rt().block_on(async {
        let t = UdsTransport::new().with_dir(&tmp.0);
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let mut listener = t.bind(&addr).await.unwrap();
        let path = PathBuf::from(addr.endpoint());
        for d in [tmp.0.as_path(), path.parent().unwrap()] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o711)).unwrap();
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        let peer = ForeignPeer::connect_as(65534, &path);
        match tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept()).await {
            Ok(Err(TransportError::PeerRefused { peer_uid, our_uid })) => {
                assert_eq!((peer_uid, our_uid), (65534, 0))
            }
            Ok(other) => panic!("expected PeerRefused, got {other:?}"),
            Err(_) => panic!("the foreign peer never connected (exit {:?})", peer.wait()),
        }
        assert_eq!(
            peer.wait(),
            0,
            "the refused peer sees its connection closed"
        );
    });
}

/// A forked process that becomes another user and connects to a socket, then waits for
/// the connection to close. Raw system calls only after the fork (the test runner is
/// multi-threaded): no Python, no PATH, no environment involved.
struct ForeignPeer(libc::pid_t);

impl ForeignPeer {
    fn connect_as(uid: libc::uid_t, path: &Path) -> ForeignPeer {
        // Prepared before the fork: the child may not allocate.
        // SAFETY: an all-zero sockaddr_un is a valid (empty) address.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_encoded_bytes();
        assert!(bytes.len() < sa.sun_path.len());
        for (d, s) in sa.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: fork has no memory-safety preconditions; the child below only makes
        // async-signal-safe system calls on memory prepared before the fork, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: raw system calls on values owned by this (single-threaded) child;
            // setgid/setuid through `syscall` act on this thread only, which is all the
            // child has.
            unsafe {
                if libc::syscall(libc::SYS_setgid, uid) != 0
                    || libc::syscall(libc::SYS_setuid, uid) != 0
                {
                    libc::_exit(2);
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if fd < 0
                    || libc::connect(
                        fd,
                        (&raw const sa).cast::<libc::sockaddr>(),
                        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                    ) != 0
                {
                    libc::_exit(3);
                }
                let mut b = [0u8; 1];
                // Returns 0 when the refusing side closes the connection.
                libc::read(fd, b.as_mut_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        ForeignPeer(pid)
    }

    /// Wait for the peer and return its exit code (-1 if it did not exit normally).
    fn wait(&self) -> i32 {
        let mut status = 0;
        // SAFETY: `status` is a live int; the pid is our child, waited for only here.
        let r = unsafe { libc::waitpid(self.0, &mut status, 0) };
        if r == self.0 && libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        }
    }
}

// --- Where sockets live: a location another user cannot pre-empt or redirect ---------

/// Create `p` (not recursively) and give it exactly `mode` (the umask does not apply).
fn mkdir(p: &Path, mode: u32) {
    fs::create_dir(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// The owner of `p` itself (a symlink is not followed).
fn owner(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().uid()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn running_as_root(why: &str) -> bool {
    if our_uid() == 0 {
        return true;
    }
    eprintln!("skipped: needs root to {why}");
    false
}

/// The default location inside a scratch base instead of /tmp.
fn default_in(base: &Path) -> Location {
    Location::Default {
        base: base.to_path_buf(),
        name: format!("brood-{}", our_uid()),
    }
}

fn expected_in(base: &Path) -> PathBuf {
    base.join(format!("brood-{}", our_uid()))
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `dir` is a fresh fallback beside the squatted `expected`: `<name>-XXXXXXXX` in the same
/// base, a real directory of ours with mode 0700.
fn assert_fresh_private(dir: &Path, expected: &Path) {
    assert_eq!(dir.parent(), expected.parent(), "{}", dir.display());
    let name = dir.file_name().unwrap().to_str().unwrap();
    let prefix = format!("{}-", expected.file_name().unwrap().to_str().unwrap());
    let suffix = name
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{name} does not start with {prefix}"));
    assert_eq!(suffix.len(), 8, "{name}");
    assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()), "{name}");
    let meta = fs::symlink_metadata(dir).unwrap();
    assert!(meta.is_dir(), "a real directory");
    assert_eq!(meta.uid(), our_uid());
    assert_eq!(meta.mode() & 0o7777, 0o700);
}

/// The `RuntimeDir` error of `r`, or a panic naming what came instead.
fn runtime_dir_error<T: std::fmt::Debug>(r: Result<T, TransportError>) -> (String, String) {
    match r {
        Err(TransportError::RuntimeDir { path, reason }) => (path, reason),
        other => panic!("expected a RuntimeDir error, got {other:?}"),
    }
}

/// Run `f` with a subscriber that keeps this thread's events as text (a minimal one, so
/// the crate needs no tracing-subscriber).
fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};

    struct Capture(Arc<Mutex<Vec<String>>>);
    struct Text(String);
    impl Visit for Text {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut text = Text(event.metadata().level().to_string());
            event.record(&mut text);
            self.0.lock().unwrap().push(text.0);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    let logs = Arc::new(Mutex::new(Vec::new()));
    let r = tracing::subscriber::with_default(Capture(logs.clone()), f);
    let logs = logs.lock().unwrap().clone();
    (r, logs)
}

#[test]
fn a_default_directory_taken_by_another_uid_is_replaced_by_a_fresh_private_one() {
    if !running_as_root("chown the expected directory to another user") {
        return;
    }
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    let expected = expected_in(&tmp.0);
    mkdir(&expected, 0o700);
    std::os::unix::fs::chown(&expected, Some(65534), Some(65534)).unwrap();

    let (r, logs) = capture_logs(|| resolve(&default_in(&tmp.0), our_uid()));
    let r = r.expect("a taken default location is not an error");
    assert!(r.fallback);
    assert_fresh_private(&r.path, &expected);
    assert_eq!(
        owner(&expected),
        65534,
        "the squatted directory is left alone"
    );
    let shown = expected.display().to_string();
    assert!(
        logs.iter()
            .any(|l| l.starts_with("WARN") && l.contains(&shown) && l.contains("65534")),
        "a warning names the squatted path and its owner: {logs:?}"
    );

    let again = resolve(&default_in(&tmp.0), our_uid()).unwrap();
    assert!(again.fallback);
    assert_ne!(again.path, r.path, "every root gets a directory of its own");
}

#[test]
fn a_file_or_a_symlink_at_the_default_directory_is_passed_over() {
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    let expected = expected_in(&tmp.0);

    fs::write(&expected, b"squat").unwrap();
    let r = resolve(&default_in(&tmp.0), our_uid()).expect("a file there is not an error");
    assert!(r.fallback);
    assert_fresh_private(&r.path, &expected);
    assert_eq!(
        fs::read(&expected).unwrap(),
        b"squat",
        "the file is left alone"
    );
    fs::remove_file(&expected).unwrap();

    // A symlink to a private directory of ours: following it would put the sockets
    // wherever the link's maker chose.
    let target = tmp.0.join("elsewhere");
    mkdir(&target, 0o700);
    std::os::unix::fs::symlink(&target, &expected).unwrap();
    let r = resolve(&default_in(&tmp.0), our_uid()).expect("a symlink there is not an error");
    assert!(r.fallback);
    assert_fresh_private(&r.path, &expected);
    assert!(
        names(&target).is_empty(),
        "nothing is created through the link"
    );
    fs::remove_file(&expected).unwrap();

    // A dangling symlink: creating the directory must not create the link's target.
    let planted = tmp.0.join("planted");
    std::os::unix::fs::symlink(&planted, &expected).unwrap();
    let r = resolve(&default_in(&tmp.0), our_uid()).expect("a dangling symlink is passed over");
    assert!(r.fallback);
    assert!(!planted.exists(), "mkdir did not follow the link");
}

#[test]
fn a_default_directory_of_ours_open_to_others_is_passed_over() {
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    let expected = expected_in(&tmp.0);
    mkdir(&expected, 0o777);
    let r = resolve(&default_in(&tmp.0), our_uid()).expect("a 0777 directory is passed over");
    assert!(r.fallback);
    assert_fresh_private(&r.path, &expected);
    assert_eq!(
        mode(&expected),
        0o777,
        "not repaired: others may have been in it"
    );

    // Once it is private again it is used as it is.
    fs::set_permissions(&expected, fs::Permissions::from_mode(0o700)).unwrap();
    let r = resolve(&default_in(&tmp.0), our_uid()).unwrap();
    assert!(!r.fallback);
    assert_eq!(r.path, expected);
}

#[test]
fn a_world_writable_ancestor_without_the_sticky_bit_is_refused() {
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    let open = tmp.0.join("open");
    mkdir(&open, 0o777);
    let shown = open.display().to_string();

    // Nothing can be trusted below it, so no fallback either: a typed error.
    let (_, reason) = runtime_dir_error(resolve(&default_in(&open), our_uid()));
    assert!(
        reason.contains(&shown) && reason.contains("sticky"),
        "{reason}"
    );
    assert!(names(&open).is_empty(), "nothing was created below it");

    let deeper = open.join("deeper");
    mkdir(&deeper, 0o700);
    let explicit = deeper.join("rt");
    let (path, reason) =
        runtime_dir_error(resolve(&Location::Explicit(explicit.clone()), our_uid()));
    assert_eq!(path, explicit.display().to_string());
    assert!(
        reason.contains(&shown) && reason.contains("sticky"),
        "the component is named: {reason}"
    );
    assert!(!explicit.exists());

    // Group-writable counts too.
    fs::set_permissions(&open, fs::Permissions::from_mode(0o775)).unwrap();
    let (_, reason) = runtime_dir_error(resolve(&Location::Explicit(explicit), our_uid()));
    assert!(reason.contains(&shown), "{reason}");
}

#[test]
fn a_sticky_world_writable_ancestor_is_accepted_for_entries_of_root_or_ours() {
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    let sticky = tmp.0.join("sticky");
    mkdir(&sticky, 0o1777);
    let r = resolve(&default_in(&sticky), our_uid()).expect("a sticky ancestor is like /tmp");
    assert!(!r.fallback);
    assert_eq!(r.path, expected_in(&sticky));
    assert_eq!(mode(&r.path), 0o700);
    let explicit = sticky.join("mine").join("rt");
    resolve(&Location::Explicit(explicit.clone()), our_uid()).expect("an explicit dir below it");
    assert_eq!(mode(&explicit), 0o700);

    // The sticky bit only stops others from replacing entries they do not own: a
    // directory in it that belongs to another user is theirs to swap.
    if !running_as_root("chown an entry of the sticky directory") {
        return;
    }
    let theirs = sticky.join("theirs");
    mkdir(&theirs, 0o755);
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let (_, reason) = runtime_dir_error(resolve(&Location::Explicit(theirs.join("rt")), our_uid()));
    assert!(
        reason.contains(&theirs.display().to_string()) && reason.contains("65534"),
        "{reason}"
    );
}

#[test]
fn an_ancestor_owned_by_another_user_is_refused() {
    if !running_as_root("chown an ancestor to another user") {
        return;
    }
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    let foreign = tmp.0.join("foreign");
    mkdir(&foreign, 0o755);
    let rt = foreign.join("rt");
    mkdir(&rt, 0o700);
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let shown = foreign.display().to_string();
    for loc in [default_in(&foreign), Location::Explicit(rt.clone())] {
        let (_, reason) = runtime_dir_error(resolve(&loc, our_uid()));
        assert!(
            reason.contains(&shown) && reason.contains("65534"),
            "{loc:?}: {reason}"
        );
    }
}

#[test]
fn an_explicit_directory_that_is_not_ours_is_a_typed_error_naming_it() {
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);

    let open = tmp.0.join("open-rt");
    mkdir(&open, 0o777);
    let (path, reason) = runtime_dir_error(resolve(&Location::Explicit(open.clone()), our_uid()));
    assert_eq!(path, open.display().to_string());
    assert!(reason.contains("777"), "{reason}");

    let target = tmp.0.join("target");
    mkdir(&target, 0o700);
    let link = tmp.0.join("link-rt");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (path, reason) = runtime_dir_error(resolve(&Location::Explicit(link.clone()), our_uid()));
    assert_eq!(path, link.display().to_string());
    assert!(reason.contains("symbolic link"), "{reason}");

    if running_as_root("chown the explicit directory or its parent") {
        let theirs = tmp.0.join("theirs-rt");
        mkdir(&theirs, 0o700);
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let (path, reason) =
            runtime_dir_error(resolve(&Location::Explicit(theirs.clone()), our_uid()));
        assert_eq!(path, theirs.display().to_string());
        assert!(reason.contains("65534"), "{reason}");

        // Ours and private, but in a directory another user owns (and could swap).
        let parent = tmp.0.join("their-parent");
        mkdir(&parent, 0o755);
        let inner = parent.join("rt");
        mkdir(&inner, 0o700);
        std::os::unix::fs::chown(&parent, Some(65534), Some(65534)).unwrap();
        let (path, reason) =
            runtime_dir_error(resolve(&Location::Explicit(inner.clone()), our_uid()));
        assert_eq!(path, inner.display().to_string());
        assert!(
            reason.contains(&parent.display().to_string()) && reason.contains("65534"),
            "{reason}"
        );
    }

    // An explicit directory is never replaced by a fallback.
    let before = names(&tmp.0);
    let _ = UdsTransport::new()
        .with_dir(&open)
        .address_for(&ActorId::new("root"), None)
        .unwrap_err();
    assert_eq!(names(&tmp.0), before, "no fallback directory was made");
}

#[test]
fn a_symlinked_ancestor_is_followed_only_when_root_or_we_made_it() {
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    let real = tmp.0.join("real");
    mkdir(&real, 0o755);
    // Like /var/run -> /run: a link of ours (or root's) in a directory nobody else can
    // write cannot be changed under us.
    std::os::unix::fs::symlink("real", tmp.0.join("link")).unwrap();
    let rt = tmp.0.join("link").join("rt");
    let r = resolve(&Location::Explicit(rt.clone()), our_uid()).expect("a trusted link");
    assert_eq!(r.path, rt);
    assert_eq!(mode(&real.join("rt")), 0o700, "created through the link");

    if !running_as_root("lchown a symlink to another user") {
        return;
    }
    // In a sticky directory another user may plant a link of their own.
    let sticky = tmp.0.join("sticky");
    mkdir(&sticky, 0o1777);
    let hop = sticky.join("hop");
    std::os::unix::fs::symlink(&real, &hop).unwrap();
    std::os::unix::fs::lchown(&hop, Some(65534), Some(65534)).unwrap();
    let (_, reason) = runtime_dir_error(resolve(&Location::Explicit(hop.join("rt2")), our_uid()));
    assert!(
        reason.contains(&hop.display().to_string()) && reason.contains("65534"),
        "{reason}"
    );
    assert!(
        !real.join("rt2").exists(),
        "nothing created through their link"
    );
}

#[test]
fn a_fallback_directory_is_removed_at_the_end_of_its_tree_and_only_it() {
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    let expected = expected_in(&tmp.0);
    let t = UdsTransport::new().with_location(default_in(&tmp.0));
    let tree_of = |a: &Addr| Path::new(a.endpoint()).parent().unwrap().to_path_buf();

    // A root in the normal location...
    let normal = t.address_for(&ActorId::new("normal"), None).unwrap();
    let normal_tree = tree_of(&normal);
    assert_eq!(normal_tree.parent(), Some(expected.as_path()));
    // ...then someone opens that location up while the tree lives; the next root falls back.
    fs::set_permissions(&expected, fs::Permissions::from_mode(0o777)).unwrap();
    let fb = t
        .address_for(&ActorId::new("fallback"), None)
        .expect("a root in a fallback directory");
    let fb_tree = tree_of(&fb);
    let fb_dir = fb_tree.parent().unwrap().to_path_buf();
    assert_fresh_private(&fb_dir, &expected);
    let child = t.address_for(&ActorId::new("child"), Some(&fb)).unwrap();
    assert_eq!(
        tree_of(&child),
        fb_tree,
        "children follow their parent's address"
    );

    t.cleanup_tree(&fb);
    assert!(
        !fb_dir.exists(),
        "the fallback directory this root made is removed"
    );
    assert!(
        normal_tree.exists(),
        "the concurrent normal tree is untouched"
    );
    assert!(expected.exists());

    t.cleanup_tree(&normal);
    assert!(
        !normal_tree.exists(),
        "the normal tree is removed at its end"
    );
    assert!(expected.exists(), "the normal runtime directory is kept");

    // Only an emptied fallback directory goes: something else in it keeps it.
    let fb2 = t.address_for(&ActorId::new("fallback2"), None).unwrap();
    let fb2_dir = tree_of(&fb2).parent().unwrap().to_path_buf();
    fs::write(fb2_dir.join("not-a-socket"), b"").unwrap();
    t.cleanup_tree(&fb2);
    assert!(!tree_of(&fb2).exists());
    assert!(
        fb2_dir.join("not-a-socket").exists(),
        "a foreign file is kept"
    );
}

#[test]
fn a_channel_binds_and_connects_through_the_fallback_directory() {
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    let expected = expected_in(&tmp.0);
    fs::write(&expected, b"squat").unwrap();
    rt().block_on(async {
        let t = UdsTransport::new().with_location(default_in(&tmp.0));
        let addr = t.address_for(&ActorId::new("root"), None).unwrap();
        let path = PathBuf::from(addr.endpoint());
        let fb_dir = path.parent().unwrap().parent().unwrap().to_path_buf();
        assert_fresh_private(&fb_dir, &expected);
        let mut listener = t.bind(&addr).await.unwrap();

        // A child reaches the root by the absolute address it was given.
        let child = UdsTransport::new();
        let client = child.connect(&addr).await.unwrap();
        let server = listener.accept().await.unwrap();
        assert_eq!(server.peer().uid, Some(our_uid()));
        let (mut ctx, mut crx) = client.split();
        let (mut stx, mut srx) = server.split();
        let hello = Frame::with_payload(Msg::Return { cid: 7 }, Bytes::from_static(b"hi"));
        ctx.feed(&hello).unwrap();
        ctx.flush().await.unwrap();
        assert_eq!(srx.recv().await.unwrap().unwrap(), hello);
        stx.feed(&hello).unwrap();
        stx.close().await.unwrap();
        assert_eq!(crx.recv().await.unwrap().unwrap(), hello);

        drop(listener);
        assert!(!path.exists(), "listener drop unlinks the socket");
        t.cleanup_tree(&addr);
        assert!(
            !fb_dir.exists(),
            "the fallback directory is gone with the tree"
        );
        assert_eq!(fs::read(&expected).unwrap(), b"squat");
    });
}

#[test]
fn stale_trees_are_removed_in_the_normal_and_in_fallback_directories() {
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    let expected = expected_in(&tmp.0);
    let t = UdsTransport::new().with_location(default_in(&tmp.0));
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let plant = |dir: &Path, pid: u32, tag: &str| {
        let tree = dir.join(format!("t{pid}-{tag}"));
        mkdir(&tree, 0o700);
        drop(std::os::unix::net::UnixListener::bind(tree.join("00.sock")).unwrap());
        tree
    };

    // The normal location.
    mkdir(&expected, 0o700);
    let stale = plant(&expected, dead_pid, "0000beef");
    let alive = plant(&expected, std::process::id(), "0000cafe");
    let a = t.address_for(&ActorId::new("root"), None).unwrap();
    assert!(!stale.exists(), "a dead root's tree is removed");
    assert!(alive.exists(), "a live root's tree is kept");
    t.cleanup_tree(&a);

    // Fallback directories of dead roots (killed before their end) are swept by the
    // next root that falls back; those of live roots and those not ours are kept.
    fs::set_permissions(&expected, fs::Permissions::from_mode(0o777)).unwrap();
    let name = expected.file_name().unwrap().to_str().unwrap().to_owned();
    let dead_fb = tmp.0.join(format!("{name}-deadbeef"));
    mkdir(&dead_fb, 0o700);
    plant(&dead_fb, dead_pid, "00000001");
    let live_fb = tmp.0.join(format!("{name}-a11ve000"));
    mkdir(&live_fb, 0o700);
    let live_tree = plant(&live_fb, std::process::id(), "00000002");
    let b = t.address_for(&ActorId::new("root2"), None).unwrap();
    assert!(
        !dead_fb.exists(),
        "a dead root's fallback directory is swept"
    );
    assert!(
        live_tree.exists(),
        "a live root's fallback directory is kept"
    );
    t.cleanup_tree(&b);
    assert!(live_tree.exists());
}

#[test]
fn a_refused_root_address_leaves_no_fallback_directory_behind() {
    let tmp = TempDir::new();
    mkdir(&tmp.0, 0o755);
    // Long enough that a socket path in a fallback directory exceeds the kernel's limit.
    let base = tmp.0.join("b".repeat(60));
    mkdir(&base, 0o755);
    let expected = expected_in(&base);
    fs::write(&expected, b"squat").unwrap();
    let t = UdsTransport::new().with_location(default_in(&base));
    match t.address_for(&ActorId::new("root"), None) {
        Err(TransportError::BadAddr { reason, .. }) => {
            assert!(reason.contains("at most"), "{reason}")
        }
        other => panic!("expected BadAddr, got {other:?}"),
    }
    assert_eq!(
        names(&base),
        vec![expected.file_name().unwrap().to_string_lossy().into_owned()],
        "the fresh directory made for the refused root is gone"
    );
}
