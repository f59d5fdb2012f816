//! The iceoryx2 rows: its request-response and publish-subscribe services (`ipc`
//! service variant: zero-copy through shared memory, no daemon).
//!
//! **Waiting.** Every iceoryx2 receiver here busy-polls (`receive` in a loop with
//! `std::hint::spin_loop`, [`super::spin_until`]); no WaitSet, listener or notifier is
//! involved, as in iceoryx2's own latency benchmarks. That is the fairest match for
//! brood-shm in these back-to-back loops: brood-shm spins for 50 µs before it parks on
//! its eventfd, and no gap in these loops lasts that long, so it never parks either;
//! an iceoryx2 event per message would add a system call to every send that brood's
//! park flag avoids.
//!
//! **Back-pressure.** The stream's data service has no safe overflow and its publisher
//! the `RetryUntilDelivered` strategy: a `send` into a full subscriber buffer waits
//! (iceoryx2's adaptive wait: `sched_yield`, then short sleeps) until the bench has
//! taken a sample out, so no message is lost (and a lost one would stop the bench
//! after 30 s, not pass unnoticed). The subscriber buffer holds `1 MiB / size` samples,
//! from 4 to 256 (brood-shm's ring is 256 KiB).
//!
//! **Isolation.** Every node uses its own root directory (`/tmp/brood-peers-iox2-<pid>/`
//! instead of `/tmp/iceoryx2/`) and file prefix (`iox2_bp<pid>_`), and every measurement
//! its own service names, so parallel runs do not meet; [`Cleanup`] removes whatever a
//! run left there, in `/dev/shm` and in that directory.

use std::hint::black_box;
use std::time::{Duration, Instant};

use iceoryx2::port::LoanError;
use iceoryx2::prelude::*;

use super::{Peer, STOP, blob, spin_until, touch};

/// Role: answer 8-byte requests on a request-response service.
pub(crate) const REQRES: &str = "iox-reqres";
/// Role: answer pings on one publish-subscribe service with pongs on another.
pub(crate) const PUBSUB_RPC: &str = "iox-pubsub-rpc";
/// Role: publish messages on a slice service as many as asked on a control service.
pub(crate) const PUBSUB_STREAM: &str = "iox-pubsub-stream";

/// The iceoryx2 configuration of the run of bench process `run`: its own root
/// directory and file prefix.
fn config(run: &str) -> Config {
    let mut config = Config::default();
    config
        .global
        .set_root_path(&Path::new(root_dir(run).as_bytes()).expect("iceoryx2 root path"));
    config.global.prefix = FileName::new(prefix(run).as_bytes()).expect("iceoryx2 prefix");
    config
}

fn root_dir(run: &str) -> String {
    format!("/tmp/brood-peers-iox2-{run}/")
}

fn prefix(run: &str) -> String {
    format!("iox2_bp{run}_")
}

/// This run's id: the bench process's pid (a peer is given it as an argument).
fn this_run() -> String {
    std::process::id().to_string()
}

/// A node of run `run`. No signal handlers: the bench is no iceoryx2 application.
fn node(run: &str) -> Node<ipc::Service> {
    NodeBuilder::new()
        .config(&config(run))
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .expect("iceoryx2 node")
}

/// A service name unique in this run: `brood-peers/<n>/<what>`, `n` counting
/// measurements.
fn fresh_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("brood-peers/{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn service_name(base: &str, what: &str) -> ServiceName {
    ServiceName::new(&format!("{base}/{what}")).expect("service name")
}

/// Repeat `attempt` (every 100 µs) until it reports that the peer got the message: a
/// message sent before the peer's port exists reaches nobody.
fn until_connected(mut attempt: impl FnMut() -> bool) {
    let start = Instant::now();
    while !attempt() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the iceoryx2 peer did not connect"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// `iters` round trips of a `u64` request and a `u64` response through a
/// request-response service: one request (and one pending response) per round trip.
pub(crate) fn reqres_round_trips(iters: u64) -> Duration {
    let (run, base) = (this_run(), fresh_name());
    let node = node(&run);
    let service = node
        .service_builder(&service_name(&base, "rpc"))
        .request_response::<u64, u64>()
        .max_clients(1)
        .max_servers(1)
        .create()
        .expect("request-response service");
    let client = service.client_builder().create().expect("client");
    let peer = Peer::spawn(REQRES, &[&run, &base]);
    let round_trip = |i: u64| {
        let pending = client.send_copy(i).expect("request");
        let got = spin_until(|| pending.receive().expect("response").map(|r| *r.payload()));
        assert_eq!(got, i, "the peer answered something else");
    };
    until_connected(|| {
        let pending = client.send_copy(0).expect("request");
        if pending.number_of_server_connections() == 0 {
            return false;
        }
        spin_until(|| pending.receive().expect("response"));
        true
    });
    let start = Instant::now();
    for i in 1..=iters {
        round_trip(i);
    }
    let elapsed = start.elapsed();
    drop(client.send_copy(STOP).expect("request"));
    peer.finish();
    elapsed
}

/// The peer of [`reqres_round_trips`]: `args` is the run and the service name's base.
pub(crate) fn reqres_peer(args: &[String]) {
    let node = node(&args[0]);
    let service = node
        .service_builder(&service_name(&args[1], "rpc"))
        .request_response::<u64, u64>()
        .open()
        .expect("request-response service");
    let server = service.server_builder().create().expect("server");
    loop {
        let request = spin_until(|| server.receive().expect("request"));
        let value = *request.payload();
        if value == STOP {
            return;
        }
        request.send_copy(value).expect("response");
    }
}

/// A `u64` publish-subscribe service of one publisher and one subscriber, no history.
fn u64_service(
    node: &Node<ipc::Service>,
    name: &ServiceName,
    buffer: usize,
) -> iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, u64, ()> {
    node.service_builder(name)
        .publish_subscribe::<u64>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(buffer)
        .enable_safe_overflow(false)
        .open_or_create()
        .expect("publish-subscribe service")
}

/// `iters` round trips of a `u64` ping and a `u64` pong, each through a
/// publish-subscribe service of its own.
pub(crate) fn pubsub_round_trips(iters: u64) -> Duration {
    let (run, base) = (this_run(), fresh_name());
    let node = node(&run);
    let ping = u64_service(&node, &service_name(&base, "ping"), 1);
    let pong = u64_service(&node, &service_name(&base, "pong"), 1);
    let ping_tx = ping.publisher_builder().create().expect("publisher");
    let pong_rx = pong.subscriber_builder().create().expect("subscriber");
    let peer = Peer::spawn(PUBSUB_RPC, &[&run, &base]);
    let round_trip = |i: u64| {
        ping_tx.send_copy(i).expect("ping");
        let got = spin_until(|| pong_rx.receive().expect("pong").map(|s| *s.payload()));
        assert_eq!(got, i, "the peer answered something else");
    };
    until_connected(|| ping_tx.send_copy(0).expect("ping") > 0);
    spin_until(|| pong_rx.receive().expect("pong"));
    let start = Instant::now();
    for i in 1..=iters {
        round_trip(i);
    }
    let elapsed = start.elapsed();
    ping_tx.send_copy(STOP).expect("ping");
    peer.finish();
    elapsed
}

/// The peer of [`pubsub_round_trips`]: `args` is the run and the services' base name.
pub(crate) fn pubsub_rpc_peer(args: &[String]) {
    let node = node(&args[0]);
    let ping = u64_service(&node, &service_name(&args[1], "ping"), 1);
    let pong = u64_service(&node, &service_name(&args[1], "pong"), 1);
    let ping_rx = ping.subscriber_builder().create().expect("subscriber");
    let pong_tx = pong.publisher_builder().create().expect("publisher");
    loop {
        let value = spin_until(|| ping_rx.receive().expect("ping").map(|s| *s.payload()));
        if value == STOP {
            return;
        }
        pong_tx.send_copy(value).expect("pong");
    }
}

/// The data service's subscriber buffer, in samples, for messages of `size` bytes.
fn buffer_for(size: usize) -> usize {
    ((1 << 20) / size.max(1)).clamp(4, 256)
}

/// The stream's data service: `[u8]` slices, no safe overflow (back-pressure instead).
fn data_service(
    node: &Node<ipc::Service>,
    name: &ServiceName,
    size: usize,
) -> iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()> {
    node.service_builder(name)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(buffer_for(size))
        .enable_safe_overflow(false)
        .open_or_create()
        .expect("publish-subscribe service")
}

/// `iters` times: ask the peer (on a control service) for `n` messages of `size` bytes,
/// published on a slice service, and receive and read them all.
pub(crate) fn pubsub_stream(iters: u64, (size, n): (u64, u64)) -> Duration {
    let (run, base) = (this_run(), fresh_name());
    let size_arg = size.to_string();
    let size = usize::try_from(size).expect("size");
    let node = node(&run);
    let control = u64_service(&node, &service_name(&base, "control"), 2);
    let data = data_service(&node, &service_name(&base, "data"), size);
    let control_tx = control.publisher_builder().create().expect("publisher");
    let data_rx = data.subscriber_builder().create().expect("subscriber");
    let peer = Peer::spawn(PUBSUB_STREAM, &[&run, &base, &size_arg]);
    let recv_one = || {
        let sample = spin_until(|| data_rx.receive().expect("message"));
        assert_eq!(sample.payload().len(), size, "a message of another size");
        touch(sample.payload())
    };
    until_connected(|| control_tx.send_copy(1).expect("control") > 0);
    black_box(recv_one());
    let start = Instant::now();
    let mut sum = 0;
    for _ in 0..iters {
        control_tx.send_copy(n).expect("control");
        for _ in 0..n {
            sum += recv_one();
        }
    }
    let elapsed = start.elapsed();
    black_box(sum);
    control_tx.send_copy(STOP).expect("control");
    peer.finish();
    elapsed
}

/// The peer of [`pubsub_stream`]: `args` is the run, the services' base name and the
/// message size.
pub(crate) fn pubsub_stream_peer(args: &[String]) {
    let node = node(&args[0]);
    let blob = blob(&args[2]);
    let control = u64_service(&node, &service_name(&args[1], "control"), 2);
    let data = data_service(&node, &service_name(&args[1], "data"), blob.len());
    let control_rx = control.subscriber_builder().create().expect("subscriber");
    let data_tx = data
        .publisher_builder()
        .initial_max_slice_len(blob.len())
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .expect("publisher");
    loop {
        let n = spin_until(|| control_rx.receive().expect("control").map(|s| *s.payload()));
        if n == STOP {
            return;
        }
        for _ in 0..n {
            // Every sample may still be in the bench's hands: then wait for one back.
            let sample = spin_until(|| match data_tx.loan_slice_uninit(blob.len()) {
                Ok(sample) => Some(sample),
                Err(LoanError::OutOfMemory | LoanError::ExceedsMaxLoans) => None,
                Err(e) => panic!("cannot loan a sample: {e}"),
            });
            sample.write_from_slice(&blob).send().expect("message");
        }
    }
}

/// Removes what this run's iceoryx2 nodes may have left (normally nothing: every port,
/// service and node is dropped by then): files with this run's prefix in `/dev/shm`,
/// and this run's root directory. Made in `main`, dropped at its end (or unwinding).
#[derive(Debug)]
pub(crate) struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = this_run();
        let prefix = prefix(&run);
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(root_dir(&run));
    }
}
