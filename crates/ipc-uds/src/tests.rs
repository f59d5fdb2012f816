use super::*;
use bytes::Bytes;
use spawn_api::{Msg, ProtocolError};
use std::os::unix::fs::PermissionsExt;
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
