//! A producer actor feeds a consumer actor 1 GiB in 64 KiB chunks, three ways, and
//! prints the throughput of each side by side:
//!
//! 1. **region ring**: the producer makes a `ShmRegion` laid out as a ring of chunks
//!    (`ShmRegion::new_ring`), hands it to the consumer as a call argument, and pushes
//!    chunks into it while the consumer pops them: one copy in, one copy out, no system
//!    call while both are busy;
//! 2. **stream over shm**: the chunks as items of a brood context on a child that
//!    talks to its parent over the `shm` transport (frames through shared rings);
//! 3. **stream over uds**: the same over a Unix socket (the default transport).
//!
//! In every case the consumer is a separate process (a child of the producer, itself a
//! child of the root) and reads every byte of every chunk (a checksum), which the
//! producer compares with its own.
//!
//! `cargo run --release --example shm_pipeline` (add `-- 4` for 4 GiB).

use std::time::{Duration, Instant};

use brood::shm::ShmRegion;
use brood::{ActorCx, ActorOptions, Blob, CalleeContext, FnError, Registry};
use serde::{Deserialize, Serialize};

/// Bytes per chunk.
const CHUNK: usize = 64 << 10;
/// Chunks the region ring holds (1 MiB: it stays in cache).
const RING_CHUNKS: usize = 16;

type Chunk = [u8; CHUNK];

/// How the chunks travel.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum Way {
    RegionRing,
    Stream { transport: &'static str },
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::RegionRing => "region ring (ShmRegion)",
            Way::Stream { transport: "shm" } => "stream over shm",
            Way::Stream { .. } => "stream over uds",
        }
    }
}

/// What a run measured, as the producer saw it.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    bytes: u64,
    elapsed: Duration,
    checksums_match: bool,
}

brood::call!(
    /// Spawns a consumer and feeds it `chunks` chunks the given way.
    Produce = "pipeline.produce": (WayWire, u64) => Report
);
brood::call!(
    /// Pops chunks from the ring until the producer is done; returns their checksum.
    ConsumeRing = "pipeline.consume_ring": ShmRegion => u64
);
brood::context!(
    /// Receives chunks as items until the producer stops; returns their checksum.
    ConsumeStream = "pipeline.consume_stream": () => started (), in Blob, out (), return u64
);

/// `Way` on the wire (`&'static str` does not deserialize).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum WayWire {
    RegionRing,
    StreamShm,
    StreamUds,
}

impl From<Way> for WayWire {
    fn from(w: Way) -> WayWire {
        match w {
            Way::RegionRing => WayWire::RegionRing,
            Way::Stream { transport: "shm" } => WayWire::StreamShm,
            Way::Stream { .. } => WayWire::StreamUds,
        }
    }
}

/// Reads every byte: the sum of the chunk's 8-byte words, wrapping.
fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
        .fold(0u64, u64::wrapping_add)
}

/// The `i`-th chunk's contents (cheap to make, different every time).
fn fill(chunk: &mut Chunk, i: u64) {
    chunk[..8].copy_from_slice(&i.to_le_bytes());
    chunk[CHUNK - 8..].copy_from_slice(&(!i).to_le_bytes());
}

fn region_error(e: impl std::fmt::Display) -> FnError {
    FnError::new("RegionError", e.to_string())
}

async fn produce(cx: ActorCx, (way, chunks): (WayWire, u64)) -> Result<Report, FnError> {
    let transport = match way {
        WayWire::StreamShm => "shm",
        WayWire::RegionRing | WayWire::StreamUds => "uds",
    };
    Ok(cx
        .open_nursery(async |n| {
            let consumer = n
                .start_actor("consumer", ActorOptions::new().transport(transport))
                .await?;
            let mut chunk: Box<Chunk> = vec![0u8; CHUNK]
                .into_boxed_slice()
                .try_into()
                .expect("CHUNK bytes");
            let mut ours = 0u64;
            let start = Instant::now();
            let theirs = match way {
                WayWire::RegionRing => {
                    let region = ShmRegion::new_ring::<Chunk>(RING_CHUNKS).map_err(region_error)?;
                    let mut tx = region.ring_sender::<Chunk>().map_err(region_error)?;
                    let feed = async move {
                        for i in 0..chunks {
                            fill(&mut chunk, i);
                            ours = ours.wrapping_add(checksum(&chunk[..]));
                            tx.send(&chunk).await.map_err(region_error)?;
                        }
                        drop(tx);
                        Ok::<u64, FnError>(ours)
                    };
                    let (fed, got) = tokio::join!(feed, consumer.run(ConsumeRing, region));
                    ours = fed?;
                    got?
                }
                WayWire::StreamShm | WayWire::StreamUds => {
                    let (mut ctx, ()) = consumer.open_context(ConsumeStream, ()).await?;
                    for i in 0..chunks {
                        fill(&mut chunk, i);
                        ours = ours.wrapping_add(checksum(&chunk[..]));
                        ctx.send(Blob::from(chunk.to_vec())).await?;
                    }
                    ctx.close_send()?;
                    ctx.result().await?
                }
            };
            Ok(Report {
                bytes: chunks * CHUNK as u64,
                elapsed: start.elapsed(),
                checksums_match: ours == theirs,
            })
        })
        .await?)
}

fn registry() -> Registry {
    Registry::new()
        .call(Produce, produce)
        .call(ConsumeRing, |_cx, region: ShmRegion| async move {
            let mut rx = region.ring_receiver::<Chunk>().map_err(region_error)?;
            let mut chunk: Box<Chunk> = vec![0u8; CHUNK]
                .into_boxed_slice()
                .try_into()
                .expect("CHUNK bytes");
            let mut sum = 0u64;
            while rx
                .recv_slice(std::slice::from_mut(&mut *chunk))
                .await
                .map_err(region_error)?
                == 1
            {
                sum = sum.wrapping_add(checksum(&chunk[..]));
            }
            Ok(sum)
        })
        .context(
            ConsumeStream,
            |_cx, (), ctx: CalleeContext<ConsumeStream>| async move {
                let mut stream = ctx.started(()).await?;
                let mut sum = 0u64;
                while let Some(chunk) = stream.recv().await? {
                    sum = sum.wrapping_add(checksum(&chunk));
                }
                Ok(sum)
            },
        )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let actors = brood::setup(registry());
    actors.enter();

    let gib: u64 = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| format!("not a number of GiB: {a:?}"))?,
        None => 1,
    };
    let chunks = gib * (1 << 30) / CHUNK as u64;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "shm_pipeline: a producer actor feeds a consumer actor {gib} GiB in {} KiB chunks\n",
        CHUNK >> 10
    );
    let ways = [
        Way::RegionRing,
        Way::Stream { transport: "shm" },
        Way::Stream { transport: "uds" },
    ];
    let reports = rt.block_on(actors.root().name("root").run(async |n| {
        let producer = n.start_actor("producer", ActorOptions::new()).await?;
        let mut reports = Vec::new();
        for way in ways {
            reports.push((way, producer.run(Produce, (way.into(), chunks)).await?));
        }
        Ok(reports)
    }))?;

    let base = reports
        .iter()
        .find(|(w, _)| matches!(w, Way::Stream { transport: "uds" }))
        .map(|(_, r)| r.elapsed.as_secs_f64())
        .unwrap_or(1.0);
    println!(
        "{:<26} {:>10} {:>10} {:>8}",
        "pipeline", "GB/s", "vs uds", "checked"
    );
    for (way, r) in &reports {
        let secs = r.elapsed.as_secs_f64();
        println!(
            "{:<26} {:>10.2} {:>9.2}x {:>8}",
            way.label(),
            r.bytes as f64 / secs / 1e9,
            base / secs,
            if r.checksums_match { "yes" } else { "NO" }
        );
    }
    if reports.iter().any(|(_, r)| !r.checksums_match) {
        return Err("a consumer's checksum differs from its producer's".into());
    }
    Ok(())
}
