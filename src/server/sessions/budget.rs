//! What each session, and all of them together, may cost: the budgets
//! (`--max-frame-rate`, `--max-lap-rate`, `--max-laps`, `--max-memory`), what
//! frames to unknown ids may create (`--on-demand-*`), and the per-session token
//! bucket that spends them. The map enforces them (admission.rs, map.rs,
//! lap_records.rs).

use crate::server::laps;

/// How many sessions frames to unknown ids may create (`serve --on-demand-limit`,
/// `--on-demand-share`). Creating on demand keeps a monitor served when the
/// processor lost its state; unbounded, it lets anyone who can publish fill the
/// session table with random ids until real creates get 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDemand {
    /// Sessions created on demand per minute, all clients together (0: no limit).
    pub per_minute: u32,
    /// No session is created on demand while this many are live.
    pub max_live: usize,
}

impl OnDemand {
    /// No bound beyond `--max-sessions` (unit tests, benchmarks' fill).
    pub const UNLIMITED: OnDemand = OnDemand {
        per_minute: 0,
        max_live: usize::MAX,
    };
}

/// A token bucket small enough for every session (8 + 4 bytes): `take` refills
/// at `per_second` up to `burst`, then spends one. On the monotonic clock, so
/// tests can pause it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Allowance {
    tokens: f32,
    last: tokio::time::Instant,
}

impl Allowance {
    pub(super) fn full(burst: f32, now: tokio::time::Instant) -> Self {
        Allowance {
            tokens: burst,
            last: now,
        }
    }

    /// Spends one token, or says how long until one is there.
    pub(super) fn take(
        &mut self,
        per_second: f32,
        burst: f32,
        now: tokio::time::Instant,
    ) -> Result<(), std::time::Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f32(
                (1.0 - self.tokens) / per_second,
            ))
        }
    }
}

/// What each session may cost (`paddock serve --max-frame-rate`, `--max-lap-rate`,
/// `--max-lap-bytes`, `--max-laps`) and what all of them together may hold
/// (`--max-memory`). docs/SECURITY.md says what these bound, in numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budgets {
    /// Frames (setup and telemetry) per second per session; 0: no limit.
    pub frame_rate: f32,
    /// Frames a session may send at once: the rate's bucket size (it starts
    /// full and refills at `frame_rate`), so a reconnect's backlog of this many
    /// is taken whole.
    pub frame_burst: f32,
    /// Fields (every car, `session.<id>.field`) per second per session, apart
    /// from the frames' rate; 0: no limit.
    pub field_rate: f32,
    /// Fields a session may send at once (the field rate's bucket).
    pub field_burst: f32,
    /// Lap records kept per minute per session (the burst is as many); 0: no limit.
    pub laps_per_minute: f32,
    /// Each session's lap history.
    pub history: laps::HistoryLimits,
    /// Bytes of frames and lap records all sessions together may hold.
    pub max_memory: usize,
    /// Bytes of frames that must stay free for a session to be created: what one
    /// session's setup, telemetry and field can hold (three frames of `--max-payload`).
    pub session_reserve: usize,
}

/// Defaults of [`Budgets`] (and of serve's flags).
pub const DEFAULT_FRAME_RATE: f32 = 100.0;
pub const DEFAULT_FRAME_BURST: f32 = 300.0;
pub const DEFAULT_LAPS_PER_MINUTE: f32 = 30.0;
/// Monitors send the field at 2 Hz (`--field-hz`); five times that is room for
/// a faster monitor, and a burst of 20 for a reconnect's backlog.
pub const DEFAULT_FIELD_RATE: f32 = 10.0;
pub const DEFAULT_FIELD_BURST: f32 = 20.0;
pub const DEFAULT_MAX_LAP_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_MEMORY: usize = 1024 * 1024 * 1024;

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            frame_rate: DEFAULT_FRAME_RATE,
            frame_burst: DEFAULT_FRAME_BURST,
            field_rate: DEFAULT_FIELD_RATE,
            field_burst: DEFAULT_FIELD_BURST,
            laps_per_minute: DEFAULT_LAPS_PER_MINUTE,
            history: laps::HistoryLimits {
                max_laps: laps::DEFAULT_MAX_LAPS,
                max_bytes: DEFAULT_MAX_LAP_BYTES,
            },
            max_memory: DEFAULT_MAX_MEMORY,
            session_reserve: 3 * 64 * 1024,
        }
    }
}

impl Budgets {
    /// No limit but the history's (unit tests, benchmarks' fill).
    pub const UNLIMITED: Budgets = Budgets {
        frame_rate: 0.0,
        frame_burst: 0.0,
        field_rate: 0.0,
        field_burst: 0.0,
        laps_per_minute: 0.0,
        history: laps::HistoryLimits {
            max_laps: laps::DEFAULT_MAX_LAPS,
            max_bytes: usize::MAX,
        },
        max_memory: usize::MAX,
        session_reserve: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::Utc;
    use serde_json::{Value, json};

    use crate::protocol::id::SessionId;
    use crate::server::sessions::{Held, Sessions};

    /// `n` telemetry frames of `size` bytes (padding), each with a new lap.
    fn flood(sessions: &Sessions, id: SessionId, laps: std::ops::Range<u64>, size: usize) {
        for lap in laps {
            let head = format!(r#"{{"lap": {lap}, "pad": ""#);
            let body = format!(
                "{head}{}\"}}",
                "x".repeat(size.saturating_sub(head.len() + 2))
            );
            let range = 8..8 + lap.to_string().len();
            let _ = sessions.update_telemetry(id, Bytes::from(body), Some(range));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lap_field_that_flaps_keeps_records_at_the_lap_rate_only() {
        let sessions = Sessions::with_limits(
            10,
            Budgets {
                laps_per_minute: 6.0,
                ..Budgets::UNLIMITED
            },
            OnDemand::UNLIMITED,
        );
        let id = sessions.create().unwrap().session_id;
        flood(&sessions, id, 1..101, 100);
        let snapshot = sessions.get(id).unwrap();
        assert_eq!(snapshot.lap.completed, 99, "every lap still counts");
        assert_eq!(snapshot.laps, 6, "a minute's worth of records");
        assert_eq!(snapshot.stats.laps_dropped, 93);
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        flood(&sessions, id, 101..111, 100);
        assert_eq!(sessions.get(id).unwrap().laps, 7, "one more after 10 s");
    }

    #[test]
    fn a_history_stays_within_its_bytes_and_huge_edge_frames_are_summarised() {
        let max_bytes = 200 * 1024;
        let sessions = Sessions::with_limits(
            10,
            Budgets {
                history: laps::HistoryLimits {
                    max_laps: 1_000,
                    max_bytes,
                },
                ..Budgets::UNLIMITED
            },
            OnDemand::UNLIMITED,
        );
        let id = sessions.create().unwrap().session_id;
        flood(&sessions, id, 1..200, 60 * 1024);
        let records = sessions.laps(id).unwrap();
        let bytes: usize = records.iter().map(|r| r.bytes()).sum();
        assert!(bytes <= max_bytes, "{bytes}");
        assert!(records.len() > 5, "{}", records.len());
        let last = records.last().unwrap();
        assert!(last.last_frame.len() <= laps::LAP_FRAME_MAX);
        let summary: Value = serde_json::from_slice(&last.next_frame).unwrap();
        assert_eq!(summary["lap"], json!(199));
        assert!(summary[laps::TRIMMED_KEY].as_u64().unwrap() >= 60 * 1024);
        assert!(summary.get("pad").is_none());
        assert_eq!(sessions.held().laps, bytes);
    }

    #[test]
    fn memory_past_the_budget_trims_laps_across_sessions_then_refuses_new_sessions() {
        let max_memory = 2 * 1024 * 1024;
        let sessions = Sessions::with_limits(
            1_000,
            Budgets {
                max_memory,
                session_reserve: 2 * 64 * 1024,
                ..Budgets::UNLIMITED
            },
            OnDemand::UNLIMITED,
        );
        let first = sessions.create().unwrap().session_id;
        // Frames small enough to be kept whole in its records: about 1.2 MB of laps.
        flood(&sessions, first, 1..100, 6 * 1024);
        let mut ids = vec![first];
        // Sessions with big frames until the frames alone fill the budget.
        let refused = loop {
            match sessions.create() {
                Ok(s) => {
                    flood(&sessions, s.session_id, 1..4, 60 * 1024);
                    ids.push(s.session_id);
                }
                Err(e) => break e,
            }
            assert!(ids.len() < 100, "never refused");
        };
        assert_eq!(refused.reason(), "over_budget");
        let held = sessions.held();
        assert!(held.total() <= max_memory, "{held:?}");
        assert!(held.laps_trimmed > 0, "{held:?}");
        // The first session's laps went first: it is the oldest.
        assert!(sessions.laps(first).unwrap().len() < 90);
        // A frame no larger than the one it replaces is still taken; a larger one not.
        let id = ids[1];
        let small = Bytes::from_static(b"{\"lap\": 3}");
        assert!(sessions.update_telemetry(id, small.clone(), None).is_ok());
        let before = sessions.get(ids[2]).unwrap().telemetry.unwrap().body;
        let larger = Bytes::from(format!(
            "{{\"lap\": 3, \"pad\": \"{}\"}}",
            "x".repeat(before.len() + 256 * 1024)
        ));
        let refused = sessions
            .update_telemetry(ids[2], larger, None)
            .expect_err("a larger frame past the budget");
        assert_eq!(refused.reason(), "over_budget", "{refused}");
        assert_eq!(
            sessions.get(ids[2]).unwrap().telemetry.unwrap().body,
            before
        );
        let load = sessions.load();
        assert!(load.held.total() <= max_memory);
        // Ending and forgetting sessions gives the memory back.
        for id in &ids {
            sessions.delete(*id).unwrap();
        }
        assert!(sessions.held().total() > 0, "the archive holds them");
        sessions.prune_ended(Utc::now() + chrono::Duration::seconds(1));
        assert_eq!(
            sessions.held(),
            Held {
                laps_trimmed: held.laps_trimmed.max(sessions.held().laps_trimmed),
                ..Held::default()
            }
        );
        assert!(sessions.create().is_ok());
    }
}
