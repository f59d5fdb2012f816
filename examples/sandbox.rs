//! An actor that parses untrusted input in a sandbox.
//!
//! `cargo run --example sandbox`
//!
//! The root starts `parser` in [`Sandbox::new`] (its own user, pid, network, ipc, uts
//! and mount namespaces; no network; the host's filesystem read-only; no capabilities;
//! `no_new_privs`; a seccomp deny list) with memory, CPU, file and task limits, then:
//!
//! 1. prints what the kernel applied (the child's report, from its vars);
//! 2. has the parser probe its walls: the network, a write outside its writable paths,
//!    the processes it can see;
//! 3. feeds it well-formed and hostile documents: a hostile one that asks for a huge
//!    allocation kills the parser (the memory limit), and the root sees a child failure
//!    instead of a machine out of memory.
//!
//! Set `BROOD_BACKEND=fork` to sandbox a forked actor instead of an exec'd one. Where the
//! kernel refuses a part (user namespaces disabled, say) the spawn fails with the part
//! named; `--best-effort` runs with what could be applied and prints what was not.

use std::collections::BTreeMap;

use brood::sandbox::{Sandbox, SandboxReport};
use brood::{ActorCx, ActorOptions, ChildError, FnError, NurseryError, Registry};

brood::call!(
    /// Parses `key = value` lines; a line `reserve = N` makes the parser reserve N MiB
    /// for the values to come (the hostile part: N is the attacker's).
    Parse = "sandbox.parse": String => BTreeMap<String, String>
);
brood::call!(
    /// What the parser's sandbox applied, from its vars.
    Report = "sandbox.report": () => Option<SandboxReport>
);
brood::call!(
    /// Tries the sandbox's walls; one line per attempt.
    Probe = "sandbox.probe": () => Vec<String>
);

fn parse(text: &str) -> Result<BTreeMap<String, String>, FnError> {
    let mut out = BTreeMap::new();
    let mut reserved: Vec<u8> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| FnError::new("ParseError", format!("line {}: no '='", n + 1)))?;
        let (key, value) = (key.trim(), value.trim());
        if key == "reserve" {
            let mib: usize = value
                .parse()
                .map_err(|_| FnError::new("ParseError", format!("line {}: not a size", n + 1)))?;
            // Trusting the input: a parser bug of the kind a sandbox is for.
            reserved = vec![1u8; mib << 20];
        }
        out.insert(key.to_owned(), value.to_owned());
    }
    out.insert("reserved_bytes".into(), reserved.len().to_string());
    Ok(out)
}

fn probe() -> Vec<String> {
    let mut lines = Vec::new();
    let net = std::net::TcpStream::connect_timeout(
        &"1.1.1.1:53".parse().expect("an address"),
        std::time::Duration::from_millis(500),
    );
    lines.push(format!(
        "connect to 1.1.1.1:53      -> {}",
        outcome(net.map(|_| ()))
    ));
    let write = std::fs::write("/etc/brood-sandbox-probe", b"x");
    lines.push(format!("write /etc/...             -> {}", outcome(write)));
    let tmp = std::fs::write("/tmp/brood-sandbox-probe", b"x");
    lines.push(format!("write /tmp/... (private)   -> {}", outcome(tmp)));
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default();
    lines.push(format!("processes in /proc         -> {pids:?}"));
    lines.push(format!(
        "host name                  -> {:?}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
    ));
    lines
}

fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "allowed".into(),
        Err(e) => format!("refused ({e})"),
    }
}

fn registry() -> Registry {
    Registry::new()
        .call(Parse, |_cx, text: String| async move { parse(&text) })
        .call(Report, |cx: ActorCx, ()| async move {
            Ok(cx.vars().sandbox.as_ref().map(|s| s.report.clone()))
        })
        .call(Probe, |_cx, ()| async move { Ok(probe()) })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let actors = brood::setup(registry());
    // A spawned child runs its actor here and never returns.
    actors.enter();
    let best_effort = std::env::args().any(|a| a == "--best-effort");
    let sandbox = Sandbox::new()
        .memory(256 << 20)
        .cpu_seconds(10)
        .open_files(64)
        .tasks(32)
        .best_effort(best_effort);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(actors.root().name("root").run(async |n| {
        let opts = ActorOptions::new().sandbox(sandbox.clone());
        let parser = n.start_actor("parser", opts.clone()).await?;
        let report = parser
            .run(Report, ())
            .await?
            .expect("a sandboxed actor's vars say so");
        println!("1. root/parser runs sandboxed:\n{report}");
        println!("2. it probes its walls:");
        for line in parser.run(Probe, ()).await? {
            println!("   {line}");
        }
        let doc = "# a well-formed document\nname = brood\nreserve = 16\n";
        println!(
            "3. a document asking for 16 MiB: {:?}",
            parser.run(Parse, doc.into()).await?
        );
        Ok(())
    }))?;

    // A hostile document, in a nursery of its own: the parser dies, the root reports it.
    let hostile = rt.block_on(actors.root().name("root").run(async |n| {
        let parser = n
            .start_actor("parser", ActorOptions::new().sandbox(sandbox))
            .await?;
        parser.run(Parse, "reserve = 4096\n".into()).await?;
        Ok(())
    }));
    match hostile {
        Err(e) => {
            let child = match e.nursery() {
                Some(NurseryError { children, .. }) if !children.is_empty() => children
                    .iter()
                    .map(|c: &ChildError| c.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
                _ => e.to_string(),
            };
            println!(
                "4. a document asking for 4 GiB: the parser failed, and the root says: {child}"
            );
        }
        Ok(()) => println!("4. a document asking for 4 GiB was parsed (no memory limit applied?)"),
    }
    println!("done");
    Ok(())
}
