//! Rate limits for what one client can make the processor do: create sessions,
//! and look up ids it does not hold (each such lookup is a read from storage).
//!
//! NATS tells a responder nothing about who asked, except where to reply. A
//! requester's replies go to its connection's inbox (`_INBOX.<connection>.<n>`),
//! so the reply subject without its last token identifies the connection. A client
//! that invents a new reply prefix for every request escapes the per-client limit;
//! `--max-sessions` still bounds what it can do, and the roles in
//! deploy/security/ decide who may create at all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `per_minute` tokens, refilled continuously; a full minute's worth may be spent
/// at once.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_minute: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_minute: u32, now: Instant) -> Self {
        TokenBucket {
            per_minute,
            tokens: per_minute as f64,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let per_second = self.per_minute as f64 / 60.0;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(self.per_minute as f64);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_second))
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.per_minute as f64 / 60.0 >= self.per_minute as f64
    }
}

/// One bucket per client; `per_minute == 0` means no limit.
#[derive(Debug)]
pub struct PerClient {
    per_minute: u32,
    buckets: HashMap<String, TokenBucket>,
}

impl PerClient {
    /// Buckets kept before idle (full) ones are dropped.
    const PRUNE_ABOVE: usize = 10_000;

    pub fn new(per_minute: u32) -> Self {
        PerClient {
            per_minute,
            buckets: HashMap::new(),
        }
    }

    pub fn take(&mut self, client: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        if self.buckets.len() >= Self::PRUNE_ABOVE {
            // A full bucket is the same as no bucket: forget those clients.
            self.buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        self.buckets
            .entry(client.to_string())
            .or_insert_with(|| TokenBucket::new(self.per_minute, now))
            .take(now)
    }
}

/// The client a reply subject belongs to: the subject without its last token
/// (`_INBOX.abc.7` → `_INBOX.abc`).
pub fn client_of(reply: &str) -> &str {
    reply.rsplit_once('.').map_or(reply, |(client, _)| client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_of_tokens_then_one_per_interval() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(60, t0);
        for _ in 0..60 {
            bucket.take(t0).unwrap();
        }
        let wait = bucket.take(t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        bucket.take(t0 + Duration::from_secs(1)).unwrap();
        assert!(bucket.take(t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn clients_are_limited_separately() {
        let t0 = Instant::now();
        let mut limits = PerClient::new(2);
        limits.take("_INBOX.a", t0).unwrap();
        limits.take("_INBOX.a", t0).unwrap();
        assert!(limits.take("_INBOX.a", t0).is_err());
        limits.take("_INBOX.b", t0).unwrap();
        let mut none = PerClient::new(0);
        for _ in 0..1000 {
            none.take("_INBOX.a", t0).unwrap();
        }
    }

    #[test]
    fn the_client_is_the_reply_subject_without_its_last_token() {
        assert_eq!(client_of("_INBOX.abc.7"), "_INBOX.abc");
        assert_eq!(client_of("_INBOX.abc.def.7"), "_INBOX.abc.def");
        assert_eq!(client_of("plain"), "plain");
    }
}

/// At most one log line per interval for a kind of event that may come in
/// floods (rejected input): the rest are counted and reported with the next line.
#[derive(Debug, Default)]
pub struct LogThrottle(Mutex<(Option<Instant>, u64)>);

impl LogThrottle {
    /// `Some(n)` when a line may be logged now, `n` being how many were held
    /// back since the last one; `None` (and one more held back) otherwise.
    pub fn allow(&self, interval: Duration) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < interval => {
                state.1 += 1;
                None
            }
            _ => {
                state.0 = Some(now);
                Some(std::mem::take(&mut state.1))
            }
        }
    }

    /// Lines held back since the last one logged.
    pub fn held_back(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}
