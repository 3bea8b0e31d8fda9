//! Service-wide counters, and rate-limited reporting of rejected input.
//!
//! Counters are atomics so the ingest loop bumps them without a lock. They are read by
//! `sessions.stats`, by the micro service's `$SRV.STATS` handler, and by `/metrics`
//! (`crate::web`). Request counts and latencies are prometheus-client metrics,
//! which are the same kind of atomics with the histogram arithmetic done for us.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Every reason input can be rejected for, as counted. The labels match
/// `PayloadError::reason`, `SessionError::reason` and `ServiceError::reason`.
pub const REJECTION_REASONS: [&str; 15] = [
    "empty",
    "too_large",
    "invalid_utf8",
    "not_object",
    "malformed_json",
    "malformed_id",
    "bad_request",
    "unknown_session",
    "ended_session",
    "at_capacity",
    "on_demand_limited",
    "rate_limited",
    "over_budget",
    "storage_unavailable",
    "partition_unavailable",
];

/// How often at most a warning about rejected input is logged. A flood of bad frames
/// must not turn into a flood of log lines.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Metrics {
    /// Sessions created, by request or on demand by their first frame.
    pub sessions_created: AtomicU64,
    /// Sessions ended by `sessions.delete`.
    pub sessions_deleted: AtomicU64,
    /// Sessions ended by inactivity.
    pub sessions_expired: AtomicU64,
    /// Telemetry frames stored.
    pub telemetry_frames: AtomicU64,
    /// Setups stored.
    pub setup_frames: AtomicU64,
    /// Fields (every car, `session.<id>.field`) stored.
    pub field_frames: AtomicU64,
    /// Laps completed (seen by this processor; each is stored once across them).
    pub laps_completed: AtomicU64,
    /// Laps completed faster than `--max-lap-rate`, whose records were not kept.
    pub laps_dropped: AtomicU64,
    /// Laps dropped from the lap writer's queue (full: storage down for long)
    /// before they were stored; they stay in memory.
    pub laps_unstored: AtomicU64,
    /// Alert events announced straight away because the alert writer's queue
    /// was full (storage slow for long): not checked against the other
    /// processors' announcements, so possibly announced twice.
    pub alerts_unqueued: AtomicU64,
    /// Accepted telemetry frames written to the trace stream.
    pub trace_frames_recorded: AtomicU64,
    /// Accepted telemetry frames left out of the trace stream: the trace
    /// writer's queue was full (a burst beyond it), or the stream refused them.
    pub trace_frames_unrecorded: AtomicU64,
    /// Rejected input by reason, indexed like [`REJECTION_REASONS`].
    rejected: [AtomicU64; REJECTION_REASONS.len()],
    /// Rate limiter for the rejection warning: when it was last logged, and how many
    /// rejections went unlogged since.
    reject_log: super::ratelimit::LogThrottle,
    /// Requests answered, by endpoint and reply code.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from the loop taking a request to its reply being sent, by endpoint:
    /// includes the catch-up on frames delivered before it (the ordering guarantee).
    pub request_seconds: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    /// Storage writes refused (write-behind flushes, write-throughs, laps).
    pub storage_write_failures: AtomicU64,
    /// Why storage is refusing writes right now; `None` while it accepts them.
    storage_refusing: Mutex<Option<String>>,
    /// The ingest queue's bytes and drops (server/intake.rs).
    pub ingest: IngestCounters,
}

/// The ingest queue's figures (server/intake.rs), kept up by the queue itself.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// `--ingest-buffer-bytes`, set when the queue starts.
    pub limit: AtomicUsize,
    /// Bytes queued now, as the queue counts them (`intake::cost`).
    pub held: AtomicUsize,
    /// The most ever queued at once: how close a run came to the bound.
    pub peak: AtomicUsize,
    /// Frames dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// Labels of `paddock_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    /// 200, or the micro error code the request was answered with.
    pub code: u16,
}

/// Labels of `paddock_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

/// Request latency buckets: 50 µs to about 1.6 s, doubling. A get is answered in
/// well under a millisecond; a create waits for a storage write (milliseconds).
fn request_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            sessions_created: AtomicU64::new(0),
            sessions_deleted: AtomicU64::new(0),
            sessions_expired: AtomicU64::new(0),
            telemetry_frames: AtomicU64::new(0),
            setup_frames: AtomicU64::new(0),
            field_frames: AtomicU64::new(0),
            laps_completed: AtomicU64::new(0),
            laps_dropped: AtomicU64::new(0),
            laps_unstored: AtomicU64::new(0),
            alerts_unqueued: AtomicU64::new(0),
            trace_frames_recorded: AtomicU64::new(0),
            trace_frames_unrecorded: AtomicU64::new(0),
            rejected: Default::default(),
            reject_log: Default::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(request_histogram),
            storage_write_failures: AtomicU64::new(0),
            storage_refusing: Mutex::new(None),
            ingest: Default::default(),
        }
    }
}

/// A point-in-time copy of the counters, as served by `sessions.stats`.
pub use crate::protocol::documents::Stats as MetricsSnapshot;

impl Metrics {
    /// Counts a session this processor learned of: created by request, on demand
    /// by a frame, or by a peer (each processor counts every session once).
    pub fn session_created(&self) {
        self.sessions_created.fetch_add(1, Relaxed);
    }

    /// Counts a session that ended, by why.
    pub fn session_ended(&self, reason: crate::protocol::documents::EndReason) {
        use crate::protocol::documents::EndReason;
        match reason {
            EndReason::Deleted => self.sessions_deleted.fetch_add(1, Relaxed),
            EndReason::Expired => self.sessions_expired.fetch_add(1, Relaxed),
        };
    }

    /// Counts one rejection and logs it, at most once per interval, with the number
    /// of rejections that were not logged in between.
    pub fn reject(&self, reason: &'static str, subject: &str, detail: &dyn std::fmt::Display) {
        if let Some(i) = REJECTION_REASONS.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
        if let Some(suppressed) = self.reject_log.allow(REJECT_LOG_INTERVAL) {
            // Cap what hostile input can put into one log line.
            let subject: String = subject.chars().take(120).collect();
            tracing::warn!(reason, %subject, %detail, suppressed, "rejected input");
        }
    }

    /// Counts one answered request.
    pub fn request(&self, endpoint: &'static str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, code })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabel { endpoint })
            .observe(took.as_secs_f64());
    }

    /// Records how a storage write went: a failure is counted and marks storage as
    /// refusing (readiness turns 503) until a write succeeds again.
    pub fn storage_write(&self, result: Result<(), &dyn std::fmt::Display>) {
        let mut refusing = self
            .storage_refusing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => *refusing = None,
            Err(e) => {
                self.storage_write_failures.fetch_add(1, Relaxed);
                *refusing = Some(e.to_string());
            }
        }
    }

    /// Why storage refuses writes, while it does.
    pub fn storage_refusing(&self) -> Option<String> {
        self.storage_refusing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The counters, with the session map's current load (see `Sessions::load`).
    pub fn snapshot(&self, load: crate::server::sessions::Load) -> MetricsSnapshot {
        let (live_sessions, ingest_rate_hz, lap_records) =
            (load.live, load.rate_hz, load.lap_records);
        let rejected: std::collections::BTreeMap<_, _> = REJECTION_REASONS
            .iter()
            .zip(&self.rejected)
            .map(|(r, n)| (r.to_string(), n.load(Relaxed)))
            .collect();
        MetricsSnapshot {
            live_sessions,
            // `+ 0.0` turns a -0.0 (a rounded tiny negative) into 0.0 for display.
            ingest_rate_hz: ((ingest_rate_hz * 10.0).round() / 10.0).max(0.0) + 0.0,
            sessions_created: self.sessions_created.load(Relaxed),
            sessions_deleted: self.sessions_deleted.load(Relaxed),
            sessions_expired: self.sessions_expired.load(Relaxed),
            telemetry_frames: self.telemetry_frames.load(Relaxed),
            setup_frames: self.setup_frames.load(Relaxed),
            field_frames: self.field_frames.load(Relaxed),
            laps_completed: self.laps_completed.load(Relaxed),
            lap_records,
            laps_dropped: self.laps_dropped.load(Relaxed),
            laps_unstored: self.laps_unstored.load(Relaxed),
            alerts_unqueued: self.alerts_unqueued.load(Relaxed),
            trace_frames_recorded: self.trace_frames_recorded.load(Relaxed),
            trace_frames_unrecorded: self.trace_frames_unrecorded.load(Relaxed),
            laps_trimmed: load.held.laps_trimmed,
            memory: crate::protocol::documents::MemoryStats {
                frame_bytes: load.held.frames,
                lap_bytes: load.held.laps,
                budget_bytes: load.budget,
                over_budget: load.over_budget,
            },
            ingest: crate::protocol::documents::IngestStats {
                held_bytes: self.ingest.held.load(Relaxed),
                peak_bytes: self.ingest.peak.load(Relaxed),
                buffer_bytes: self.ingest.limit.load(Relaxed),
                dropped: self.ingest.dropped.load(Relaxed),
            },
            rejected_total: rejected.values().sum(),
            rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_is_counted_even_when_not_logged() {
        let m = Metrics::default();
        for _ in 0..1000 {
            m.reject("malformed_json", "session.x.telemetry", &"bad");
        }
        m.reject("too_large", "s", &"big");
        let s = m.snapshot(Default::default());
        assert_eq!(s.rejected["malformed_json"], 1000);
        assert_eq!(s.rejected["too_large"], 1);
        assert_eq!(s.rejected_total, 1001);
        // One warning logged, the rest suppressed and carried to the next one.
        assert_eq!(m.reject_log.held_back(), 1000);
    }
}
