//! Process titles: a process actor shows `brood: <tree path>` as its command line
//! (`/proc/<pid>/cmdline`, `ps`, `top -c`) and `brood:<name>`, cut to the kernel's 15
//! bytes, as its command name (`/proc/<pid>/comm`, `top`); an in-process actor is a thread
//! of its parent's process named `brood:<name>` (cut the same way).

use brood::ActorOptions;
use harness::functions::*;
use harness::{Failed, in_process};

use crate::common::*;

crate::tests!(
    a_child_and_a_grandchild_show_their_tree_paths,
    the_forkserver_titles_itself_and_leaves_room_for_its_children on "fork",
);

/// The most bytes of a command name the kernel keeps.
const COMM_MAX: usize = 15;

/// `name` cut to what the kernel keeps of a command name (the names here are ASCII).
fn comm(name: &str) -> &str {
    &name[..name.len().min(COMM_MAX)]
}

/// `/proc/<pid>/<file>`.
fn proc_read(pid: u32, file: &str) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/{file}: {e}"))
}

/// The first string of `/proc/<pid>/<file>` (up to its first NUL or newline).
fn proc_first(pid: u32, file: &str) -> String {
    let bytes = proc_read(pid, file);
    let end = bytes
        .iter()
        .position(|&b| b == 0 || b == b'\n')
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// That the actor `who`, called `name`, shows its title: as a process of its own, its
/// command line and command name; in-process, the name of its thread.
fn assert_titled(who: &Who, name: &str) {
    assert_eq!(in_process(who), in_process_backend(), "{who:?}");
    if in_process(who) {
        // A thread of this process (std keeps 15 bytes of its name).
        let thread = harness::leaks::thread_name(who.tid)
            .unwrap_or_else(|| panic!("no thread {} in this process: {who:?}", who.tid));
        assert_eq!(thread, comm(&format!("brood:{name}")), "{who:?}");
        return;
    }
    assert_eq!(
        proc_first(who.pid, "cmdline"),
        format!("brood: {}", who.path),
        "the first argument of {who:?}"
    );
    assert_eq!(
        proc_first(who.pid, "comm"),
        comm(&format!("brood:{name}")),
        "the command name of {who:?}"
    );
}

/// A child whose name fits the command name and a grandchild whose name is cut: each
/// shows its own tree path.
fn a_child_and_a_grandchild_show_their_tree_paths() -> Result<(), Failed> {
    with_root(async |n| {
        let kid = n.start_actor("worker", ActorOptions::new()).await?;
        let who = kid.run(WhoAmI, ()).await?;
        assert_eq!(who.path, "root/worker");
        assert_titled(&who, "worker");

        let (_held, gc) = kid
            .open_context(HoldGrandchild, ActorOptionsWire::default())
            .await?;
        assert_eq!(gc.path, format!("{}/grandchild", who.path));
        // `brood:grandchild` is 16 bytes: the kernel keeps 15.
        assert_eq!(comm("brood:grandchild"), "brood:grandchil");
        assert_titled(&gc, "grandchild");
        n.cancel().await;
        Ok(())
    })?;
    Ok(())
}

/// The forkserver replaces the padded `argv[0]` it is started with by its own title, and
/// a forked child's title is not cut even with a long tree path: the padding is the room
/// the children share. Always on the fork backend.
fn the_forkserver_titles_itself_and_leaves_room_for_its_children() -> Result<(), Failed> {
    let long = "a-rather-long-actor-name-for-a-title".repeat(2);
    within_deadline(harness::root().use_backend("fork").run(async |n| {
        let kid = n.start_actor(&long, ActorOptions::new()).await?;
        let who = kid.run(WhoAmI, ()).await?;
        let server = kid.run(ProcSelf, ()).await?.ppid;
        assert_ne!(server, std::process::id(), "forked by the server");
        let cmdline = proc_read(server, "cmdline");
        let title = b"brood: forkserver";
        assert!(
            cmdline.starts_with(title) && cmdline[title.len()..].iter().all(|&b| b == 0),
            "the server's command line: {:?}",
            String::from_utf8_lossy(&cmdline)
        );
        assert_eq!(proc_first(server, "comm"), "brood-forksrv");

        let cmdline = proc_read(who.pid, "cmdline");
        let title = format!("brood: {}", who.path);
        assert!(title.len() > 80, "{title}");
        assert!(
            cmdline.starts_with(title.as_bytes()) && cmdline[title.len()..].iter().all(|&b| b == 0),
            "the child's command line: {:?}",
            String::from_utf8_lossy(&cmdline)
        );
        assert_eq!(proc_first(who.pid, "comm"), "brood:a-rather-");
        n.cancel().await;
        Ok(())
    }))?;
    Ok(())
}
