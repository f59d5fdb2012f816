//! Process titles: what `ps`, `top` and `/proc` show for a process.
//!
//! The kernel keeps two names:
//!
//! - the **command name** (`/proc/<pid>/comm`, what plain `top` and `ps -o comm` show):
//!   per thread, at most [`COMM_MAX`] bytes, set with `prctl(PR_SET_NAME)` by
//!   [`set_comm`];
//! - the **command line** (`/proc/<pid>/cmdline`, what `ps` and `top -c` show): not a
//!   copy but the memory of the process's initial argument strings, wherever they are in
//!   its address space. A process retitles itself by overwriting them in place
//!   ([`set_cmdline`]); the title cannot outgrow the area the process was started with,
//!   so a program that starts a process meant to retitle itself later gives it room with
//!   a long `argv[0]` (`std::os::unix::process::CommandExt::arg0`).
//!
//! A process that execs a program can set the child's command line directly with
//! `arg0` and needs none of this for it.

use std::io;
use std::ops::Range;

/// The most bytes of a command name the kernel keeps (`TASK_COMM_LEN` less the NUL).
pub const COMM_MAX: usize = 15;

/// Set both names of this process to `title`: the command line (as [`set_cmdline`]) and
/// the calling thread's command name (as [`set_comm`], so its first [`COMM_MAX`] bytes).
///
/// # Errors
/// As [`set_comm`] and [`set_cmdline`] (the command name is set first; an error of the
/// command line leaves it set).
///
/// # Examples
///
/// ```no_run
/// // First thing in `main`, before any thread starts.
/// os_wrappers::title::set("brood: root/worker")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set(title: &str) -> io::Result<()> {
    set_comm(title)?;
    set_cmdline(title).map(drop)
}

/// Set the calling thread's command name to the longest prefix of `name` that fits
/// [`COMM_MAX`] bytes and ends on a character boundary (see [`comm_prefix`]); a NUL byte
/// ends it early.
///
/// `/proc/<pid>/comm` shows the main thread's name, so call it on the main thread to
/// rename the process; threads started afterwards inherit the name unless given their own.
///
/// # Errors
/// The OS error of `prctl(PR_SET_NAME)` (it has none on Linux for a valid buffer).
///
/// # Examples
///
/// ```
/// std::thread::spawn(|| {
///     os_wrappers::title::set_comm("brood:a-long-actor-name").unwrap();
///     let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
///     assert_eq!(comm.trim_end(), "brood:a-long-ac");
/// })
/// .join()
/// .unwrap();
/// ```
pub fn set_comm(name: &str) -> io::Result<()> {
    let kept = comm_prefix(name).as_bytes();
    // Zeroed, so the name is NUL-terminated whatever its length.
    let mut buf = [0u8; COMM_MAX + 1];
    buf[..kept.len()].copy_from_slice(kept);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from its
    // second argument; `buf` is 16 bytes, lives across the call and its last byte is
    // always 0. The remaining arguments are unused by this option.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The longest prefix of `name` that is at most [`COMM_MAX`] bytes and ends on a
/// character boundary: the command name [`set_comm`] sets for `name` (up to a NUL byte).
///
/// # Examples
///
/// ```
/// use os_wrappers::title::comm_prefix;
/// assert_eq!(comm_prefix("brood:worker"), "brood:worker");
/// assert_eq!(comm_prefix("brood:a-long-actor-name"), "brood:a-long-ac");
/// // `ö` is two bytes: it would end at byte 16, so it is left out whole.
/// assert_eq!(comm_prefix("brood:abcdefghö"), "brood:abcdefgh");
/// ```
pub fn comm_prefix(name: &str) -> &str {
    floor_boundary(name, COMM_MAX)
}

/// Overwrite this process's argument strings with `title`, so that its command line
/// (`/proc/self/cmdline`, `ps`, `top -c`) reads `title`. The title is cut (on a
/// character boundary) to the size of the area the process started with, less one byte,
/// and the rest of the area is filled with NUL bytes. Returns how many bytes of `title`
/// are shown.
///
/// The arguments are gone afterwards: `std::env::args` then yields the title and empty
/// strings. brood's actor processes read none of theirs.
///
/// It refuses to run while the process has other threads, which could be reading the
/// argument strings (`std::env::args`, the C library's `program_invocation_name`) as they
/// change: call it first thing in `main`, or in a child just forked from a
/// single-threaded process.
///
/// # Errors
/// - [`io::ErrorKind::ResourceBusy`] if the process runs other threads;
/// - [`io::ErrorKind::Unsupported`] if the kernel does not show where the argument
///   strings are (an area of zero bytes in `/proc/self/stat`);
/// - [`io::ErrorKind::InvalidData`] if `/proc/self/stat` cannot be parsed;
/// - the error reading `/proc/self/stat` (no `/proc` mounted, say).
///
/// # Examples
///
/// ```no_run
/// // In a process started with a long enough `argv[0]`, before any thread starts.
/// let shown = os_wrappers::title::set_cmdline("brood: root/worker")?;
/// assert_eq!(shown, "brood: root/worker".len());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_cmdline(title: &str) -> io::Result<usize> {
    let stat = std::fs::read("/proc/self/stat")?;
    let stat = parse_stat(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "cannot parse /proc/self/stat for the argument area",
        )
    })?;
    if stat.threads != 1 {
        return Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "the process runs {} threads: others could read the argument strings as \
                 they change",
                stat.threads
            ),
        ));
    }
    if stat.args.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel shows no argument area for this process",
        ));
    }
    // SAFETY: the area is this process's own argument strings, as the kernel reports
    // them for the calling process, and the process has no other thread (checked above,
    // and only this thread could start one) that could read them meanwhile.
    Ok(unsafe { write_area(title, stat.args) })
}

/// What [`set_cmdline`] needs from `/proc/<pid>/stat`.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    /// `num_threads` (field 20).
    threads: u64,
    /// `arg_start..arg_end` (fields 48 and 49): the address range of the argument
    /// strings.
    args: Range<usize>,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2, in parentheses) may contain
/// spaces, parentheses and any byte but NUL, so fields are counted after the *last* `)`,
/// which ends it: the fields after it are numbers and a state letter.
fn parse_stat(stat: &[u8]) -> Option<Stat> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 (the state) is the first after the command name: field n is nth(n - 3).
    let threads = fields.nth(20 - 3)?.parse().ok()?;
    let start = fields.nth(48 - 20 - 1)?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    if end < start {
        return None;
    }
    Some(Stat {
        threads,
        args: start..end,
    })
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn floor_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Write `title` (cut to `area.len() - 1` bytes on a character boundary) at the start of
/// `area`, then NUL bytes to its end; returns how many bytes of `title` were written.
///
/// # Safety
/// `area` must be this process's argument strings as `/proc/self/stat` reports them
/// (memory the kernel mapped writable at exec and nothing frees), not empty, and no other
/// thread may read them while this runs. The C library and std keep only raw pointers to
/// them, no Rust reference.
unsafe fn write_area(title: &str, area: Range<usize>) -> usize {
    let len = area.end - area.start;
    let kept = floor_boundary(title, len - 1);
    let start = std::ptr::with_exposed_provenance_mut::<u8>(area.start);
    // SAFETY: `kept.len() < len`, so the bytes written lie in the area, which is ours and
    // writable (the caller's contract); `ptr::copy` tolerates a title that overlaps it.
    unsafe { std::ptr::copy(kept.as_ptr(), start, kept.len()) };
    // SAFETY: `start + kept.len() .. start + len` is the rest of the area, in bounds as
    // above; filling it with NULs leaves every argument string NUL-terminated within it.
    unsafe { std::ptr::write_bytes(start.add(kept.len()), 0, len - kept.len()) };
    kept.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `stat` line whose command name is `comm`, with threads 3 and the argument area
    /// 1000..1040, padded with plausible fields.
    fn stat_line(comm: &[u8]) -> Vec<u8> {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".into();
        fields[20 - 3] = "3".into();
        fields[48 - 3] = "1000".into();
        fields[49 - 3] = "1040".into();
        let mut line = b"4242 (".to_vec();
        line.extend_from_slice(comm);
        line.extend_from_slice(b") ");
        line.extend_from_slice(fields.join(" ").as_bytes());
        line.push(b'\n');
        line
    }

    #[test]
    fn parse_stat_counts_fields_after_the_last_paren_of_hostile_names() {
        let want = Some(Stat {
            threads: 3,
            args: 1000..1040,
        });
        for comm in [
            &b"worker"[..],
            b"a) b (c",
            b"x) R 1 2 3 4 5 6 7 8 9",
            b")",
            b"((",
            b"",
            b"two\nlines",
            b"\xff\xfe not utf-8",
            b"a)) 7 (b) 8",
        ] {
            assert_eq!(
                parse_stat(&stat_line(comm)),
                want,
                "{:?}",
                String::from_utf8_lossy(comm)
            );
        }
    }

    #[test]
    fn parse_stat_refuses_what_is_not_a_stat_line() {
        let full = stat_line(b"w");
        // Cut before field 49.
        let at = full.windows(5).position(|w| w == b" 1040").unwrap();
        assert_eq!(parse_stat(&full[..at]), None);
        assert_eq!(parse_stat(b"4242 worker S 1 2 3"), None);
        assert_eq!(parse_stat(b""), None);
        let swapped = String::from_utf8(full)
            .unwrap()
            .replace(" 1000 1040 ", " 1040 1000 ");
        assert_eq!(parse_stat(swapped.as_bytes()), None);
        let signed = String::from_utf8(stat_line(b"w"))
            .unwrap()
            .replace(" 1000 ", " -1000 ");
        assert_eq!(parse_stat(signed.as_bytes()), None);
    }

    #[test]
    fn parse_stat_reads_this_process() {
        let stat = parse_stat(&std::fs::read("/proc/self/stat").unwrap()).unwrap();
        // A test binary runs libtest's main thread and the test's own.
        assert!(stat.threads >= 2, "{stat:?}");
        assert!(!stat.args.is_empty(), "{stat:?}");
    }

    #[test]
    fn comm_prefix_keeps_15_bytes_on_a_char_boundary() {
        assert_eq!(comm_prefix(""), "");
        assert_eq!(comm_prefix("exactly-15-byte"), "exactly-15-byte");
        assert_eq!(comm_prefix("sixteen-bytes-xx"), "sixteen-bytes-x");
        // Three-byte characters: five fit, the sixth would end at byte 18.
        assert_eq!(comm_prefix("€€€€€€"), "€€€€€");
        assert_eq!(comm_prefix("brood:wörker-pool"), "brood:wörker-p");
        assert_eq!(comm_prefix("brood:abcdefghö"), "brood:abcdefgh");
    }

    #[test]
    fn set_comm_names_the_calling_thread() {
        std::thread::spawn(|| {
            set_comm("brood:wörker-pool-7").unwrap();
            let comm = std::fs::read("/proc/thread-self/comm").unwrap();
            assert_eq!(comm, "brood:wörker-p\n".as_bytes());
            // A NUL ends the name.
            set_comm("brood:a\0b").unwrap();
            let comm = std::fs::read("/proc/thread-self/comm").unwrap();
            assert_eq!(comm, b"brood:a\n");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn set_cmdline_refuses_while_other_threads_run() {
        // libtest runs this test on a thread of its own: the process has two at least.
        let e = set_cmdline("brood: refused").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy, "{e}");
        let e = set("brood: refused").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy, "{e}");
    }

    /// The only test that retitles the test process (its command line stays changed).
    #[test]
    fn write_area_retitles_this_process() {
        let stat = parse_stat(&std::fs::read("/proc/self/stat").unwrap()).unwrap();
        let len = stat.args.len();
        assert!(len > 1, "{stat:?}");
        // Longer than the area: cut to len - 1 bytes, one NUL left at the end.
        let long = "t".repeat(len + 10);
        // SAFETY: the area is this process's argument strings, from the kernel; libtest
        // parsed them at startup and no test of this crate reads them again.
        let shown = unsafe { write_area(&long, stat.args.clone()) };
        assert_eq!(shown, len - 1);
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(&cmdline[..len - 1], &long.as_bytes()[..len - 1]);
        assert_eq!(cmdline[len - 1], 0);

        let title = "brood: root/wörker";
        // SAFETY: as above.
        let shown = unsafe { write_area(title, stat.args.clone()) };
        let kept = floor_boundary(title, len - 1);
        assert_eq!(shown, kept.len());
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(cmdline.len(), len, "the whole area, NULs included");
        assert_eq!(&cmdline[..shown], kept.as_bytes());
        assert!(cmdline[shown..].iter().all(|&b| b == 0), "{cmdline:?}");
    }
}
