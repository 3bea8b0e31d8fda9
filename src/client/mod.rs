//! A client for the `sessions` service: what the paddock commands (ops, monitor,
//! watch) use to talk to a processor, with the service's errors as values.

use std::time::Duration;

use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::{Client, RequestErrorKind};
use bytes::Bytes;
use serde_json::Value;

use serde::de::DeserializeOwned;

use crate::protocol::documents::{
    Deleted, ErrorBody, LapPage, LapRecord, Page, SessionDocument, SessionSummary, Stats,
};
use crate::protocol::subjects;

pub mod connect;
pub mod creds;

/// How a request to the service can fail, worded for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Nobody subscribes to the subject (no responders), or no reply came in time.
    #[error("no paddock processor is answering on {url}")]
    NoProcessor { url: String },
    /// The broker refused to pass the request on: these credentials may not
    /// publish to its subject.
    #[error("the broker refused the request: {0} (check the credentials and --inbox-prefix)")]
    Refused(String),
    /// The processor refused the request: the micro error code, its message, and
    /// the stable label from the body (`ended_session`, `unknown_session`, …) when
    /// the processor sent one.
    #[error("{reason} (error {code})")]
    Service {
        code: u16,
        reason: String,
        kind: Option<String>,
    },
    #[error("unexpected reply from the processor: {0}")]
    BadReply(String),
    #[error("request failed: {0}")]
    Request(String),
}

impl ClientError {
    /// Worth retrying as it is: no processor is up yet, one answered 503 because
    /// its storage is briefly unavailable (a JetStream cluster electing a new
    /// stream leader after losing a node takes a few seconds), or 429 because this
    /// client created many sessions in the last minute.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::NoProcessor { .. }
                | ClientError::Service {
                    code: 503 | 429,
                    ..
                }
        )
    }
}

/// How many processors answer the service's discovery PING (`$SRV.PING.sessions`)
/// within 300 ms.
pub async fn processors_answering(nats: &Client) -> Result<usize, async_nats::Error> {
    use futures::StreamExt;
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await?;
    let ping = format!("$SRV.PING.{}", subjects::SERVICE_NAME);
    nats.publish_with_reply(ping, inbox, Bytes::new()).await?;
    let mut seen = 0;
    while let Ok(Some(reply)) =
        tokio::time::timeout(Duration::from_millis(300), replies.next()).await
    {
        // With nobody subscribed the broker itself answers "no responders" (a
        // status message, no payload): that is not a processor.
        if reply.status.is_none() && !reply.payload.is_empty() {
            seen += 1;
        }
    }
    Ok(seen)
}

/// Waits, at most `patience`, until the broker answers a JetStream API request
/// about `stream`: its state, or "not found". Answers whether it did.
///
/// A node of a cluster drops such requests without a reply until the cluster has
/// elected its metadata leader (about a second after the nodes meet), and
/// async-nats's JetStream calls wait out a 10 s timeout each time; this asks
/// every half second instead. It gives up at once when the connection is down
/// or the server has no JetStream: that does not change by waiting here.
pub async fn jetstream_answers(nats: &Client, stream: &str, patience: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    let subject = subjects::stream_info(stream);
    loop {
        if nats.connection_state() != async_nats::connection::State::Connected
            || !nats.server_info().jetstream
        {
            return false;
        }
        let asked = nats.request(subject.clone(), Bytes::new());
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_millis(500), asked).await {
            // 503 is "JetStream system temporarily unavailable": not yet.
            if !reply.payload.windows(11).any(|w| w == br#""code":503"#) {
                return true;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Requests to the `sessions` service over one connection.
#[derive(Debug, Clone)]
pub struct SessionsClient {
    client: Client,
    /// The broker's URL, for messages.
    url: String,
    /// How long to wait for a reply before deciding no processor is answering.
    timeout: Duration,
}

impl SessionsClient {
    pub fn new(client: Client, url: impl Into<String>, timeout: Duration) -> Self {
        SessionsClient {
            client,
            url: url.into(),
            timeout,
        }
    }

    /// A request on any subject, with the service's error headers turned into
    /// errors, and the reply read as `T` (a protocol document).
    pub async fn request_as<T: DeserializeOwned>(
        &self,
        subject: String,
        body: Bytes,
    ) -> Result<T, ClientError> {
        let no_processor = || ClientError::NoProcessor {
            url: self.url.clone(),
        };
        let started = std::time::Instant::now();
        let refused_or = |fallback: ClientError| {
            connect::refusal_since(&subject, started).map_or(fallback, ClientError::Refused)
        };
        let reply =
            match tokio::time::timeout(self.timeout, self.client.request(subject.clone(), body))
                .await
            {
                Err(_) => return Err(refused_or(no_processor())),
                Ok(Err(e)) => {
                    return Err(match e.kind() {
                        RequestErrorKind::NoResponders | RequestErrorKind::TimedOut => {
                            refused_or(no_processor())
                        }
                        _ => ClientError::Request(e.to_string()),
                    });
                }
                Ok(Ok(reply)) => reply,
            };
        if let Some(headers) = &reply.headers
            && let Some(code) = headers.get(NATS_SERVICE_ERROR_CODE)
        {
            let code = code.as_str().parse().unwrap_or(500);
            let reason = headers
                .get(NATS_SERVICE_ERROR)
                .map(|r| r.as_str().to_string())
                .unwrap_or_else(|| "no reason given".into());
            let kind = serde_json::from_slice::<ErrorBody>(&reply.payload)
                .ok()
                .and_then(|body| body.reason);
            return Err(ClientError::Service { code, reason, kind });
        }
        serde_json::from_slice(&reply.payload).map_err(|e| ClientError::BadReply(e.to_string()))
    }

    /// A request to `sessions.<endpoint>`.
    pub async fn request<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: Value,
    ) -> Result<T, ClientError> {
        let body = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        self.request_as(subjects::control(endpoint), body).await
    }

    /// The dashboard page's address a processor advertises (`serve --public-url`
    /// or `--http-addr`), from the service's discovery info; `None` when no
    /// processor serves the page, or this connection may not ask (per-session
    /// credentials).
    pub async fn dashboard_url(&self) -> Option<String> {
        self.service_metadata(subjects::DASHBOARD_URL_METADATA)
            .await
    }

    /// Whether the processor issues per-session credentials (its discovery
    /// metadata says); `None` when this connection may not ask, or no processor
    /// answers.
    pub async fn issues_credentials(&self) -> Option<bool> {
        self.service_metadata(subjects::ISSUES_CREDENTIALS_METADATA)
            .await
            .map(|v| v == "true")
    }

    /// One key of a processor's `$SRV.INFO` metadata.
    async fn service_metadata(&self, key: &str) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Info {
            #[serde(default)]
            metadata: std::collections::HashMap<String, String>,
        }
        // Short: what it is asked for is a convenience, and must not hold up a
        // monitor's start.
        let ask = self.request_as(subjects::SERVICE_INFO.to_string(), Bytes::new());
        let info: Info = tokio::time::timeout(Duration::from_secs(1), ask)
            .await
            .ok()?
            .ok()?;
        info.metadata.get(key).cloned()
    }

    /// A team link's credentials (`sessions.team`, per-session mode): the
    /// team's, or with `car` those of that car's page opened from the link.
    pub async fn team_access(
        &self,
        team: &str,
        car: Option<crate::protocol::id::SessionId>,
    ) -> Result<crate::protocol::documents::TeamAccess, ClientError> {
        let request = crate::protocol::documents::TeamRequest {
            team: team.to_string(),
            session_id: car,
        };
        let body = serde_json::to_vec(&request).expect("serializes");
        self.request_as(subjects::Endpoint::Team.subject(), body.into())
            .await
    }

    /// A new link to a live session's page (`sessions.share`, per-session
    /// mode): its id and first credentials.
    pub async fn share(
        &self,
        id: &crate::protocol::id::SessionId,
    ) -> Result<crate::protocol::documents::LinkAccess, ClientError> {
        self.request(subjects::SHARE, serde_json::json!({ "session_id": id }))
            .await
    }

    /// The links `request` names (`sessions.links`; every link for an empty one).
    pub async fn links(
        &self,
        request: &crate::protocol::documents::LinksRequest,
    ) -> Result<crate::protocol::documents::LinkList, ClientError> {
        let body = serde_json::to_value(request).expect("serializes");
        self.request(subjects::LINKS, body).await
    }

    /// Withdraws the links `request` names (`sessions.revoke`).
    pub async fn revoke(
        &self,
        request: &crate::protocol::documents::LinksRequest,
    ) -> Result<crate::protocol::documents::Revoked, ClientError> {
        let body = serde_json::to_value(request).expect("serializes");
        self.request(subjects::REVOKE, body).await
    }

    /// Fresh credentials of one role (`Endpoint::RenewMonitor` or
    /// `RenewDashboard`) for a live session, in per-session mode.
    pub async fn renew(
        &self,
        id: &crate::protocol::id::SessionId,
        role: subjects::Endpoint,
    ) -> Result<crate::protocol::documents::Renewed, ClientError> {
        self.request_as(subjects::renew_one(role, id), Bytes::new())
            .await
    }

    pub async fn create(&self) -> Result<SessionDocument<Value>, ClientError> {
        self.request(subjects::CREATE, Value::Null).await
    }

    /// A new session with its team and car labels (none: as [`Self::create`]).
    pub async fn create_labelled(
        &self,
        label: &crate::protocol::documents::Label,
    ) -> Result<SessionDocument<Value>, ClientError> {
        if label.team.is_none() && label.car.is_none() {
            return self.create().await;
        }
        let body = serde_json::to_value(label).expect("a label serializes");
        self.request(subjects::CREATE, body).await
    }

    /// A session's document, asked on `sessions.get.<id>` (what per-session
    /// credentials allow); an id that is not one goes in a body, for the server's
    /// 400.
    pub async fn get(&self, id: &str) -> Result<SessionDocument<Value>, ClientError> {
        match crate::protocol::id::SessionId::parse(id) {
            Ok(id) => self.request_as(subjects::get_one(&id), Bytes::new()).await,
            Err(_) => {
                self.request(subjects::GET, serde_json::json!({ "session_id": id }))
                    .await
            }
        }
    }

    pub async fn delete(&self, id: &str) -> Result<Deleted<Value>, ClientError> {
        self.request(subjects::DELETE, serde_json::json!({ "session_id": id }))
            .await
    }

    pub async fn stats(&self) -> Result<Stats, ClientError> {
        self.request(subjects::STATS, Value::Null).await
    }

    /// A session's completed laps from lap number `from_lap` on (all with `None`),
    /// following `sessions.laps.<id>` pages to the end; from the archive with
    /// `archived`.
    pub async fn laps(
        &self,
        id: &crate::protocol::id::SessionId,
        from_lap: Option<f64>,
        archived: bool,
    ) -> Result<Vec<LapRecord<Value>>, ClientError> {
        let subject = if archived {
            subjects::archive_laps_one(id)
        } else {
            subjects::laps_one(id)
        };
        let mut laps = Vec::new();
        let mut from = from_lap.map(Value::from);
        loop {
            let body = match &from {
                Some(from) => serde_json::json!({ "from_lap": from, "limit": 1000 }),
                None => serde_json::json!({ "limit": 1000 }),
            };
            let page: LapPage<Value> = self
                .request_as(subject.clone(), Bytes::from(body.to_string()))
                .await?;
            laps.extend(page.laps);
            match page.next_from_lap {
                None => return Ok(laps),
                Some(next) if Some(&next) == from.as_ref() => return Ok(laps),
                next => from = next,
            }
        }
    }

    /// One recorded lap's frames as recorded (`sessions.trace.<id>` with
    /// `"raw": true`): `lap` is its number or `"best"`.
    pub async fn recorded_lap(
        &self,
        id: &crate::protocol::id::SessionId,
        lap: crate::protocol::trace::LapRef,
        channels: &[&str],
    ) -> Result<crate::protocol::trace::Trace, ClientError> {
        self.lap_trace(id, lap, channels, None).await
    }

    /// One recorded lap (`sessions.trace.<id>`): on a grid every `step_m`
    /// metres, or as recorded when `step_m` is `None`.
    pub async fn lap_trace(
        &self,
        id: &crate::protocol::id::SessionId,
        lap: crate::protocol::trace::LapRef,
        channels: &[&str],
        step_m: Option<f64>,
    ) -> Result<crate::protocol::trace::Trace, ClientError> {
        let body = crate::protocol::trace::TraceRequest {
            lap: Some(lap),
            channels: Some(channels.iter().map(|c| c.to_string()).collect()),
            step_m,
            raw: step_m.is_none(),
            ..Default::default()
        };
        let body = serde_json::to_vec(&body).expect("requests serialize");
        self.request_as(subjects::trace_one(id), Bytes::from(body))
            .await
    }

    /// A session's stints, live or ended (`sessions.stints.<id>`).
    pub async fn stints(
        &self,
        id: &crate::protocol::id::SessionId,
    ) -> Result<crate::protocol::documents::Stints, ClientError> {
        self.request_as(subjects::stints_one(id), Bytes::new())
            .await
    }

    /// Every archived session (of `team` only, when given), following
    /// `sessions.archive.list` pages to the end.
    pub async fn archive_list_all(
        &self,
        team: Option<&str>,
    ) -> Result<Vec<crate::protocol::documents::ArchivedSummary>, ClientError> {
        self.every_page(subjects::ARCHIVE_LIST, team).await
    }

    /// An ended session's final state (`sessions.archive.get`).
    pub async fn archive_get(
        &self,
        id: &str,
    ) -> Result<crate::protocol::documents::ArchivedSession<Value>, ClientError> {
        self.request(
            subjects::ARCHIVE_GET,
            serde_json::json!({ "session_id": id }),
        )
        .await
    }

    /// Every live session (of `team` only, when given), following
    /// `sessions.list` pages to the end.
    pub async fn list_all(&self, team: Option<&str>) -> Result<Vec<SessionSummary>, ClientError> {
        self.every_page(subjects::LIST, team).await
    }

    /// The rows of every page of a paged listing (`sessions.list`,
    /// `sessions.archive.list`), of `team` only when given.
    async fn every_page<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        team: Option<&str>,
    ) -> Result<Vec<T>, ClientError> {
        let mut rows = Vec::new();
        let mut offset = 0usize;
        loop {
            let request = crate::protocol::documents::ListRequest {
                limit: None,
                offset,
                team: team.map(str::to_string),
            };
            let body = serde_json::to_value(&request).expect("a list request serializes");
            let page: Page<T> = self.request(endpoint, body).await?;
            rows.extend(page.sessions);
            match page.next_offset {
                Some(next) if next > offset => offset = next,
                _ => return Ok(rows),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_processor_and_503_are_worth_retrying() {
        let no_processor = ClientError::NoProcessor { url: "u".into() };
        let unavailable = ClientError::Service {
            code: 503,
            reason: "storage unavailable".into(),
            kind: None,
        };
        let bad = ClientError::Service {
            code: 400,
            reason: "bad".into(),
            kind: None,
        };
        assert!(no_processor.is_transient());
        assert!(unavailable.is_transient());
        assert!(!bad.is_transient());
        assert!(!ClientError::BadReply("x".into()).is_transient());
    }
}
