//! Credentials a connection holds, kept current, and per-session credentials kept
//! fresh while their session lives.
//!
//! Per-session credentials are short-lived (`serve --credentials-ttl`): an ended
//! session's stop working within that time. Their holder renews them through the
//! processor (`sessions.renew.<role>.<id>`), which answers only while the session
//! lives. The connection signs each (re)connect with whatever [`LiveCreds`] holds
//! at that moment, so a renewal takes effect by reconnecting: the broker drops a
//! connection whose JWT expires, and a connection cannot swap its JWT in place.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::{Auth, AuthError, Client};
use chrono::Utc;
use data_encoding::BASE64URL_NOPAD;
use nkeys::KeyPair;

use super::{ClientError, SessionsClient};
use crate::protocol::id::SessionId;
use crate::protocol::subjects::Endpoint;

/// The JWT and seed of a `.creds` document.
pub fn parts(text: &str) -> Option<(String, String)> {
    let block = |begin: &str| {
        let start = text.find(begin)? + begin.len();
        let body = text[start..]
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('-'))?;
        Some(body.to_string())
    };
    Some((
        block("-----BEGIN NATS USER JWT-----")?,
        block("-----BEGIN USER NKEY SEED-----")?,
    ))
}

/// A JWT's claims (its middle part), when it has readable ones.
fn claims(jwt: &str) -> Option<serde_json::Value> {
    let claims = jwt.split('.').nth(1)?;
    serde_json::from_slice(&BASE64URL_NOPAD.decode(claims.as_bytes()).ok()?).ok()
}

/// A JWT's `iat` and `exp` claims (Unix seconds), when it has them.
fn lifetime(jwt: &str) -> Option<(i64, i64)> {
    let claims = claims(jwt)?;
    Some((claims["iat"].as_i64()?, claims["exp"].as_i64()?))
}

/// Refuses a JWT that could not receive a reply under `inbox_prefix`: a request
/// sent anyway would still reach the processor (a create would create a session
/// and issue its credentials) and its answer would be lost. Checked from the
/// JWT's own subscribe permissions, before anything is sent; credentials that do
/// not limit subscriptions pass.
fn check_inbox(jwt: &str, inbox_prefix: &str) -> anyhow::Result<()> {
    let Some(allowed) = sub_allow(jwt) else {
        return Ok(());
    };
    let reply = format!("{inbox_prefix}.connection.1");
    if allowed
        .iter()
        .any(|pattern| subject_matches(pattern, &reply))
    {
        return Ok(());
    }
    let prefixes: Vec<&str> = allowed
        .iter()
        .filter_map(|p| p.strip_suffix(".>"))
        .filter(|p| p.starts_with("_INBOX"))
        .collect();
    match prefixes.as_slice() {
        [prefix, ..] => anyhow::bail!(
            "these credentials receive replies only under {prefix}: pass --inbox-prefix {prefix}"
        ),
        [] => anyhow::bail!(
            "these credentials may not receive replies under {inbox_prefix} (they may subscribe \
             to {}): pass the --inbox-prefix they allow",
            allowed.join(", ")
        ),
    }
}

/// A user JWT's `nats.sub.allow`, when it has one.
fn sub_allow(jwt: &str) -> Option<Vec<String>> {
    let claims = claims(jwt)?;
    let allow = claims["nats"]["sub"]["allow"].as_array()?;
    Some(
        allow
            .iter()
            .filter_map(|p| Some(p.as_str()?.to_string()))
            .collect(),
    )
}

/// NATS subject matching: `*` is one token, a final `>` one or more.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for want in pattern.split('.') {
        match (want, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (want, Some(token)) if want == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

struct Held {
    jwt: String,
    key: Arc<KeyPair>,
}

/// A user JWT and its key, replaceable while connections use them.
#[derive(Clone, Default)]
pub struct LiveCreds(Arc<RwLock<Option<Held>>>);

impl std::fmt::Debug for LiveCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed.
        f.write_str("LiveCreds")
    }
}

impl LiveCreds {
    /// Takes the JWT and seed of a `.creds` document.
    pub fn set(&self, text: &str) -> anyhow::Result<()> {
        let (jwt, seed) = parts(text).ok_or_else(|| anyhow::anyhow!("not a .creds document"))?;
        let key = KeyPair::from_seed(&seed).map_err(|e| anyhow::anyhow!("bad seed: {e}"))?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Held {
            jwt,
            key: Arc::new(key),
        });
        Ok(())
    }

    /// Whether the JWT held now may receive replies under `inbox_prefix`
    /// (see `check_inbox`); without one held, nothing to check.
    pub fn check_inbox(&self, inbox_prefix: &str) -> anyhow::Result<()> {
        let held = self.0.read().unwrap_or_else(|e| e.into_inner());
        held.as_ref()
            .map_or(Ok(()), |held| check_inbox(&held.jwt, inbox_prefix))
    }

    /// When the JWT held now was issued and when it expires, if it says.
    pub fn lifetime(&self) -> Option<(i64, i64)> {
        let held = self.0.read().unwrap_or_else(|e| e.into_inner());
        lifetime(&held.as_ref()?.jwt)
    }

    /// For `ConnectOptions::with_auth_callback`: the JWT held at connect time and
    /// the server's nonce signed with its key.
    pub fn callback(
        &self,
    ) -> impl Fn(Vec<u8>) -> std::future::Ready<Result<Auth, AuthError>> + Send + Sync + 'static
    {
        let live = self.clone();
        move |nonce| {
            let held = live.0.read().unwrap_or_else(|e| e.into_inner());
            std::future::ready(match held.as_ref() {
                None => Err(AuthError::new("no credentials")),
                Some(held) => held
                    .key
                    .sign(&nonce)
                    .map(|signature| {
                        let mut auth = Auth::new();
                        auth.jwt = Some(held.jwt.clone());
                        auth.signature = Some(signature);
                        auth
                    })
                    .map_err(|e| AuthError::new(e.to_string())),
            })
        }
    }
}

/// Why [`keep_fresh`] stopped.
#[derive(Debug)]
pub enum Stopped {
    /// The session ended (deleted or expired): the processor renews no more.
    SessionEnded(ClientError),
    /// These are not renewable per-session credentials (no expiry, or the broker
    /// or processor does not renew them): nothing to keep fresh.
    NotRenewable,
}

/// Keeps `live` fresh for `role` (`Endpoint::RenewMonitor` or `RenewDashboard`)
/// of session `id`: renews when two thirds of the credentials' lifetime have
/// passed, hands the new `.creds` to `save` (the command writes them back to its
/// file, so a restart finds working ones), and reconnects `client` with them.
/// Returns when it can renew no more.
pub async fn keep_fresh(
    client: Client,
    live: LiveCreds,
    save: impl Fn(&str),
    id: SessionId,
    role: Endpoint,
) -> Stopped {
    let sessions = SessionsClient::new(client.clone(), String::new(), Duration::from_secs(5));
    let mut renewed_once = false;
    loop {
        let Some((issued, expires)) = live.lifetime() else {
            return Stopped::NotRenewable;
        };
        let now = Utc::now().timestamp();
        let due = issued + (expires - issued) * 2 / 3;
        if due > now {
            tokio::time::sleep(Duration::from_secs((due - now) as u64)).await;
        }
        match sessions.renew(&id, role).await {
            Ok(renewed) => {
                if let Err(e) = live.set(&renewed.creds) {
                    tracing::warn!(error = %e, "the renewed credentials do not read");
                    return Stopped::NotRenewable;
                }
                save(&renewed.creds);
                tracing::info!(session_id = %id, expires_at = %renewed.expires_at, "credentials renewed; reconnecting with them");
                renewed_once = true;
                if let Err(e) = client.force_reconnect().await {
                    tracing::warn!(error = %e, "cannot reconnect with the renewed credentials");
                }
            }
            Err(e @ ClientError::Service { code: 404, .. }) => return Stopped::SessionEnded(e),
            // No renewal endpoint for these credentials (team mode, a processor
            // without --issuer-*): they are not per-session ones.
            Err(ClientError::Refused(_) | ClientError::Service { code: 400, .. })
                if !renewed_once =>
            {
                return Stopped::NotRenewable;
            }
            Err(e) => {
                // No processor right now (a restart, a broker outage): try again
                // shortly, while the credentials still work.
                tracing::warn!(error = %e, "cannot renew the session's credentials yet; retrying");
                if Utc::now().timestamp() >= expires {
                    tracing::error!(session_id = %id, "the session's credentials expired before they could be renewed");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_as_the_broker_matches_them() {
        assert!(subject_matches("_INBOX_ops.>", "_INBOX_ops.a.b"));
        assert!(!subject_matches("_INBOX_ops.>", "_INBOX_ops"));
        assert!(!subject_matches("_INBOX_ops.>", "_INBOX.a.b"));
        assert!(subject_matches(
            "session.*.telemetry",
            "session.x.telemetry"
        ));
        assert!(!subject_matches(
            "session.*.telemetry",
            "session.x.telemetry.y"
        ));
        assert!(!subject_matches("session.*", "session"));
    }

    #[test]
    fn the_jwt_and_seed_come_out_of_a_creds_file() {
        let text = "-----BEGIN NATS USER JWT-----\neyJ0.eyJz.c2ln\n------END NATS USER JWT------\n\n\
                    *** IMPORTANT ***\n\n-----BEGIN USER NKEY SEED-----\nSUAEXAMPLE\n\
                    ------END USER NKEY SEED------\n";
        assert_eq!(
            parts(text),
            Some(("eyJ0.eyJz.c2ln".to_string(), "SUAEXAMPLE".to_string()))
        );
        assert_eq!(parts("not creds"), None);
    }
}
