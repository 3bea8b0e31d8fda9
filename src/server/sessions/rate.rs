//! A session's telemetry rate, for the document's `rate_hz` and `sessions.stats`.

/// Length of the window the current frame rate is measured over.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// A session's telemetry rate: frames counted in a tumbling window. One increment
/// per frame on the hot path; the division happens when the rate is read.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateWindow {
    start: tokio::time::Instant,
    count: u32,
    /// Frames per second over the last complete window.
    previous: f32,
}

impl RateWindow {
    pub(super) fn new(now: tokio::time::Instant) -> Self {
        RateWindow {
            start: now,
            count: 0,
            previous: 0.0,
        }
    }

    pub(super) fn record(&mut self, now: tokio::time::Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= RATE_WINDOW {
            self.previous = self.count as f32 / elapsed.as_secs_f32();
            self.start = now;
            self.count = 0;
        }
        self.count += 1;
    }

    /// Frames per second recently: the last complete window's rate, the current
    /// window's once it is complete, and 0 after two windows without a frame.
    pub(super) fn current(&self, now: tokio::time::Instant) -> f32 {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= 2 * RATE_WINDOW {
            0.0
        } else if elapsed >= RATE_WINDOW || (self.previous == 0.0 && elapsed.as_secs_f32() >= 1.0) {
            self.count as f32 / elapsed.as_secs_f32()
        } else {
            self.previous
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::server::sessions::Sessions;
    use crate::server::sessions::test_support::doc;

    #[tokio::test(start_paused = true)]
    async fn the_rate_follows_the_frames() {
        use std::time::Duration;
        let sessions = Sessions::new(10);
        let id = sessions.create().unwrap().session_id;
        let other = sessions.create().unwrap().session_id;
        for _ in 0..60 {
            for id in [id, other] {
                sessions
                    .update_telemetry(id, Bytes::from_static(b"{}"), None)
                    .unwrap();
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        let rate = sessions.get(id).unwrap().rate_hz;
        assert!((9.0..=11.0).contains(&rate), "10 Hz: {rate}");
        // The service's rate is every session's together.
        let all = sessions.load().rate_hz;
        assert!((18.0..=22.0).contains(&all), "2 × 10 Hz: {all}");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            sessions.get(id).unwrap().rate_hz,
            0.0,
            "silent for two windows"
        );
        assert_eq!(sessions.load().rate_hz, 0.0);
        let d = doc(&sessions.get(id).unwrap());
        assert!(d["stats"]["duration_s"].as_f64().unwrap() >= 0.0);
    }
}
