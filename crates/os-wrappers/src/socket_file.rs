//! A Unix stream listener at a path in the runtime directory, and the socket file it
//! makes: what the socket-based transports (`ipc-uds`, and `ipc-shm`'s control sockets)
//! do the same way.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The socket file of a listener: removed when this is dropped (with the listener).
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl SocketFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Listen at `path`, registered with the current tokio reactor. A socket file left over
/// at `path` is reused only if nobody listens there any more. The socket is not
/// `chmod`ed: it sits in a private (0700) directory, and every actor would pay for the
/// call at start-up.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let dir = std::env::temp_dir().join(format!("socket-file-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("a.sock");
/// let (listener, file) = os_wrappers::socket_file::bind(&path).unwrap();
/// assert!(os_wrappers::socket_file::bind(&path).is_err(), "in use");
/// drop((listener, file));
/// assert!(!path.exists());
/// std::fs::remove_dir(&dir).unwrap();
/// # }
/// ```
///
/// # Errors
/// `AddrInUse` if a live listener holds `path`; else the error of `bind` or of the
/// registration.
///
/// # Panics
/// Outside a tokio runtime.
pub fn bind(path: &Path) -> io::Result<(tokio::net::UnixListener, SocketFile)> {
    if fs::symlink_metadata(path).is_ok() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(io::ErrorKind::AddrInUse.into()),
            Err(_) => {
                let _ = fs::remove_file(path);
            }
        }
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path)?;
    let file = SocketFile(path.to_owned());
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(std_listener)?;
    Ok((listener, file))
}

/// Remove the socket file at `path`, if there is one (anything else is left alone).
pub fn remove(path: &Path) {
    if let Ok(meta) = fs::symlink_metadata(path)
        && std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
    {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_file_is_reused_and_a_plain_file_is_not_removed() {
        let dir = std::env::temp_dir().join(format!("socket-file-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        // A socket file nobody listens at any more (its listener was leaked).
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let (_l, file) = bind(&path).expect("the stale file is reused");
        assert_eq!(file.path(), path);
        remove(&path);
        assert!(!path.exists());
        let plain = dir.join("plain");
        fs::write(&plain, b"x").unwrap();
        remove(&plain);
        assert!(plain.exists(), "not a socket: left alone");
        fs::remove_dir_all(&dir).unwrap();
    }
}
