//! `paddock bench --only partitions`: what partitioned ownership buys on this
//! machine. For 1, 2 and 4 partitions, one processor owning each: the frames all
//! of them apply together per second, and each one's memory with many sessions.

use std::time::Duration;

use anyhow::Context;

use super::rig::{Processor, connect, start_broker_with};
use super::{Frame, fill, median, paddock_ingest};
use crate::client::SessionsClient;

/// What one layout measured.
pub(crate) struct Figures {
    /// Frames applied per second by all processors together (median of rounds).
    pub(crate) ingest: f64,
    /// Each processor's resident memory growth while `sessions` were filled, mean.
    pub(crate) growth_per_processor: f64,
}

/// One broker with `partitions` partitions (its mappings), `partitions`
/// processors (memory store, so only processing is measured), `frames` frames
/// over `ids.len()` sessions per round, then `sessions` sessions filled for
/// memory.
pub(crate) async fn run(
    bin: &std::path::Path,
    partitions: u32,
    frames: usize,
    rounds: usize,
    ids: usize,
    sessions: usize,
) -> anyhow::Result<Figures> {
    let mappings = (partitions > 1).then(|| crate::broker::mappings_config(partitions));
    let broker = start_broker_with(bin, mappings)?;
    let client = connect(&broker.url()).await?;
    let service = SessionsClient::new(client.clone(), broker.url(), Duration::from_secs(5));
    let count = partitions.to_string();
    let mut processors = Vec::new();
    for p in 0..partitions {
        let owns = p.to_string();
        let mut args = vec!["--store", "memory"];
        if partitions > 1 {
            args.extend(["--partitions", &count, "--owns", &owns]);
        }
        processors.push(Processor::spawn(
            &broker.url(),
            &args,
            &format!("-p{partitions}-{p}"),
        )?);
    }
    Processor::wait_ready(&mut processors, &service).await?;
    let logs = || {
        processors
            .iter()
            .map(|p| p.log.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };

    let frame = Frame::small();
    let (ids, data) = super::new_sessions(ids);
    let mut ingest = Vec::new();
    for round in 1..=rounds {
        let rate = paddock_ingest(&client, &service, &ids, &data, &frame, frames)
            .await
            .with_context(|| format!("see {}", logs()))?;
        say!("  round {round}: {:.0} frames/s", rate);
        ingest.push(rate);
    }

    let before: Vec<u64> = processors
        .iter()
        .map(Processor::rss_bytes)
        .collect::<anyhow::Result<_>>()?;
    let live = ids.len();
    fill(&client, &service, &Frame::rich(), live, live + sessions).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut growth = 0.0;
    for (processor, before) in processors.iter().zip(before) {
        growth += processor.rss_bytes()?.saturating_sub(before) as f64;
    }
    for processor in processors {
        processor.stop().await?;
    }
    Ok(Figures {
        ingest: median(&mut ingest),
        growth_per_processor: growth / f64::from(partitions),
    })
}
