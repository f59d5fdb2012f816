//! The ipc-channel rows: its byte channels (a `SOCK_SEQPACKET` socketpair per channel,
//! big messages in fragments) and its shared memory (`IpcSharedMemory`: a `memfd` per
//! message, passed as a descriptor and mapped by the receiver).
//!
//! Each measurement starts one peer, which connects to an `IpcOneShotServer` and hands
//! over the ends the bench keeps; a blocking `recv` is how both sides wait.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
    IpcSharedMemory,
};

use super::{Peer, STOP, blob, touch};

/// Role: echo 8-byte requests.
pub(crate) const RPC: &str = "ipc-rpc";
/// Role: stream byte messages.
pub(crate) const BYTES: &str = "ipc-bytes";
/// Role: stream `IpcSharedMemory` messages.
pub(crate) const SHMEM: &str = "ipc-shmem";

/// What an echoing peer hands over: where requests go, where replies come from.
type RpcBoot = (IpcBytesSender, IpcBytesReceiver);
/// What a streaming peer hands over: where control messages go, where data comes from.
type StreamBoot<D> = (IpcBytesSender, D);

/// `iters` round trips of an 8-byte request and an 8-byte reply, over two byte channels.
pub(crate) fn rpc_round_trips(iters: u64) -> Duration {
    let (server, name) = IpcOneShotServer::<RpcBoot>::new().expect("one-shot server");
    let peer = Peer::spawn(RPC, &[&name]);
    let (_boot, (requests, replies)) = server.accept().expect("peer connects");
    let round_trip = |i: u64| {
        requests.send(&i.to_le_bytes()).expect("request");
        let reply = replies.recv().expect("reply");
        assert_eq!(reply, i.to_le_bytes(), "the peer echoed something else");
    };
    round_trip(0);
    let start = Instant::now();
    for i in 1..=iters {
        round_trip(i);
    }
    let elapsed = start.elapsed();
    // The peer ends when the request channel does.
    drop(requests);
    peer.finish();
    elapsed
}

/// The peer of [`rpc_round_trips`]: `args` is the one-shot server's name.
pub(crate) fn rpc_peer(args: &[String]) {
    let boot = IpcSender::<RpcBoot>::connect(args[0].clone()).expect("connect to the bench");
    let (req_tx, req_rx) = ipc::bytes_channel().expect("request channel");
    let (rep_tx, rep_rx) = ipc::bytes_channel().expect("reply channel");
    boot.send((req_tx, rep_rx))
        .expect("hand over the channel ends");
    while let Ok(request) = req_rx.recv() {
        rep_tx.send(&request).expect("reply");
    }
}

/// `iters` times: ask the peer for `n` messages of `size` bytes over a byte channel and
/// receive them all.
pub(crate) fn bytes_stream(iters: u64, (size, n): (u64, u64)) -> Duration {
    stream::<IpcBytesReceiver>(BYTES, iters, (size, n), |data| {
        touch(&data.recv().expect("message"))
    })
}

/// `iters` times: ask the peer for `n` messages of `size` bytes, each an
/// `IpcSharedMemory` sent over a typed channel, and receive them all.
pub(crate) fn shmem_stream(iters: u64, (size, n): (u64, u64)) -> Duration {
    stream::<IpcReceiver<IpcSharedMemory>>(SHMEM, iters, (size, n), |data| {
        touch(&data.recv().expect("message"))
    })
}

/// The bench side of both streams: `recv_one` receives and reads one message.
fn stream<D>(
    role: &str,
    iters: u64,
    (size, n): (u64, u64),
    recv_one: impl Fn(&D) -> u64,
) -> Duration
where
    D: serde::Serialize + for<'de> serde::Deserialize<'de>,
{
    let (server, name) = IpcOneShotServer::<StreamBoot<D>>::new().expect("one-shot server");
    let peer = Peer::spawn(role, &[&name, &size.to_string()]);
    let (_boot, (control, data)) = server.accept().expect("peer connects");
    // One message first: the peer is connected and has written its message once.
    control.send(&1u64.to_le_bytes()).expect("control");
    black_box(recv_one(&data));
    let start = Instant::now();
    let mut sum = 0;
    for _ in 0..iters {
        control.send(&n.to_le_bytes()).expect("control");
        for _ in 0..n {
            sum += recv_one(&data);
        }
    }
    let elapsed = start.elapsed();
    black_box(sum);
    control.send(&STOP.to_le_bytes()).expect("control");
    peer.finish();
    elapsed
}

/// The peer of [`bytes_stream`]: `args` is the server's name and the message size.
pub(crate) fn bytes_peer(args: &[String]) {
    let boot = IpcSender::<StreamBoot<IpcBytesReceiver>>::connect(args[0].clone())
        .expect("connect to the bench");
    let (ctl_tx, ctl_rx) = ipc::bytes_channel().expect("control channel");
    let (data_tx, data_rx) = ipc::bytes_channel().expect("data channel");
    boot.send((ctl_tx, data_rx))
        .expect("hand over the channel ends");
    let blob = blob(&args[1]);
    serve(&ctl_rx, || data_tx.send(&blob).expect("message"));
}

/// The peer of [`shmem_stream`]: `args` as for [`bytes_peer`].
pub(crate) fn shmem_peer(args: &[String]) {
    let boot = IpcSender::<StreamBoot<IpcReceiver<IpcSharedMemory>>>::connect(args[0].clone())
        .expect("connect to the bench");
    let (ctl_tx, ctl_rx) = ipc::bytes_channel().expect("control channel");
    let (data_tx, data_rx) = ipc::channel::<IpcSharedMemory>().expect("data channel");
    boot.send((ctl_tx, data_rx))
        .expect("hand over the channel ends");
    let blob = blob(&args[1]);
    serve(&ctl_rx, || {
        data_tx
            .send(IpcSharedMemory::from_bytes(&blob))
            .expect("message")
    });
}

/// Send messages with `send_one` as many as each control message asks, until [`STOP`].
fn serve(control: &IpcBytesReceiver, mut send_one: impl FnMut()) {
    loop {
        let msg = control.recv().expect("control message");
        let n = u64::from_le_bytes(msg.try_into().expect("an 8-byte count"));
        if n == STOP {
            return;
        }
        for _ in 0..n {
            send_one();
        }
    }
}
