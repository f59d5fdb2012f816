//! A secret kept in a file that only its owner can read: how programs that should trust
//! each other (the members of one registrar) share a key without putting it on a
//! command line or in an environment, both readable by other processes.
//!
//! The file holds 64 hexadecimal digits (32 bytes) and a newline. [`write_new`] creates
//! it with mode 0600 and never replaces or follows anything; [`read`] accepts only a
//! regular file (not a symbolic link) owned by this process's user that no one else
//! may read or write, so a secret another user planted or could read is refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The size of the file's content: 64 hex digits and a newline.
const LEN: usize = 65;

/// Create `path` (which must not exist) holding `secret`, readable by its owner only.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("brood-secret-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("secret");
/// os_wrappers::secret_file::write_new(&path, &[7; 32]).unwrap();
/// assert_eq!(os_wrappers::secret_file::read(&path).unwrap(), [7; 32]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
///
/// # Errors
/// The OS error if the file exists already (`AlreadyExists`: nothing is replaced) or
/// cannot be created or written.
pub fn write_new(path: &Path, secret: &[u8; 32]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let mut text = String::with_capacity(LEN);
    for b in secret {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// The secret in `path`, after checking that only this process's user can read it.
///
/// # Errors
/// `InvalidData` naming the fault if the file is not a regular file, is owned by
/// another user, may be read or written by group or others, or does not hold 64 hex
/// digits; the OS error if it cannot be opened (a symbolic link is refused with
/// `ELOOP`).
pub fn read(path: &Path) -> io::Result<[u8; 32]> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    if !meta.file_type().is_file() {
        return Err(bad("not a regular file".to_owned()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(bad(format!("owned by uid {}, not {me}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:o} lets others read or write it (want 600)",
            meta.mode() & 0o777
        )));
    }
    let mut text = Vec::with_capacity(LEN + 1);
    f.take(LEN as u64 + 1).read_to_end(&mut text)?;
    let digits = text.strip_suffix(b"\n").unwrap_or(&text);
    if digits.len() != 64 {
        return Err(bad("does not hold 64 hex digits".to_owned()));
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad("not hex".to_owned()))?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad("not hex".to_owned()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("brood-secret-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_written_secret_reads_back_and_is_never_replaced() {
        let d = dir("rw");
        let p = d.join("s");
        let secret: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        write_new(&p, &secret).unwrap();
        assert_eq!(read(&p).unwrap(), secret);
        let again = write_new(&p, &[0; 32]).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(read(&p).unwrap(), secret);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_others_may_read_a_link_or_garbage_is_refused() {
        let d = dir("bad");
        let p = d.join("s");
        write_new(&p, &[1; 32]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(&p).unwrap_err().kind(), io::ErrorKind::InvalidData);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(read(&link).is_err(), "a symbolic link is not followed");
        let junk = d.join("junk");
        std::fs::write(&junk, "not a secret\n").unwrap();
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&junk).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let long = d.join("long");
        std::fs::write(&long, "ab".repeat(40)).unwrap();
        std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&long).unwrap_err().kind(), io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
