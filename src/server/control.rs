//! The control plane: what each `sessions.*` endpoint does with a request body.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use crate::protocol::documents::{
    ArchivedSession, ArchivedSummary, Deleted, Label, Link, LinkAccess, LinkKind, LinkList,
    LinksRequest, ListRequest, Page, Revoked, Stints, TeamAccess, TeamRequest,
};
use crate::protocol::id::{LinkId, SessionId};
use crate::protocol::payload::validate_object;
use crate::protocol::subjects::{self, Endpoint, Event};
use crate::server::app::{Announcement, App};
use crate::server::credentials::Role;
use crate::server::error::ServiceError;
use crate::server::links::LinkError;
use crate::server::race;
use crate::server::sessions::{Ended, SessionError};

/// A successful reply, what must be stored before it is sent, and what to announce
/// once it is.
#[derive(Debug)]
pub struct Reply {
    pub body: Bytes,
    pub persist: Option<PersistAction>,
    pub announce: Option<Announcement>,
}

/// A change the reply promises is durable.
#[derive(Debug)]
pub enum PersistAction {
    /// A new session.
    Session(SessionId),
    /// A session that ended, with its final state, for the archive.
    End(Box<Ended>),
    /// A new shared link: stored before its credentials are handed out, so
    /// every processor can renew and withdraw it.
    LinkCreated(Box<Link>),
    /// A link renewed: checked against the links bucket and recorded there
    /// (a compare-and-set), so a renewal that raced a withdrawal on another
    /// processor is refused rather than answered.
    LinkRenewed {
        link: LinkId,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// Links withdrawn, recorded for every processor and for restarts.
    LinksRevoked(Vec<Link>),
}

impl Reply {
    fn json(value: &impl serde::Serialize) -> Self {
        Reply {
            body: serde_json::to_vec(value).expect("replies serialize").into(),
            persist: None,
            announce: None,
        }
    }
}

/// A session link's credentials, as `sessions.share` and its renewals give them.
fn session_link_access(
    issuer: &crate::server::credentials::Issuer,
    id: SessionId,
    link: &LinkId,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<LinkAccess, ServiceError> {
    let creds = issuer
        .for_session_link(&id, link, expires_at.timestamp())
        .map_err(|e| ServiceError::Unavailable(format!("cannot issue credentials: {e}")))?;
    Ok(LinkAccess {
        link: link.clone(),
        kind: LinkKind::Session,
        team: None,
        session_id: Some(id),
        creds,
        inbox_prefix: subjects::inbox_prefix(&id),
        expires_at,
    })
}

/// The body of `sessions.renew.link`.
#[derive(Debug, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewLinkRequest {
    link: LinkId,
    /// A team link's car page: that car's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_id: Option<SessionId>,
}

#[derive(Deserialize)]
struct IdRequest<'a> {
    #[serde(borrow)]
    session_id: Cow<'a, str>,
}

/// One page of `rows`.
fn page<T>(rows: Vec<T>, request: &ListRequest) -> Page<T> {
    let (offset, limit) = request.bounds();
    let total = rows.len();
    Page::slice(rows, total, offset, limit)
}

impl App {
    /// Dispatches a request for `endpoint`: the one place requests meet handlers.
    pub fn handle_control(&self, endpoint: Endpoint, body: &[u8]) -> Result<Reply, ServiceError> {
        self.handle_control_for(endpoint, None, body)
    }

    /// Same, for a request whose subject named the session (`sessions.get.<id>`
    /// and the other forms of `Endpoint::one_session`): `subject_id` is that last
    /// token, untrusted.
    pub fn handle_control_for(
        &self,
        endpoint: Endpoint,
        subject_id: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, ServiceError> {
        let subject_id = subject_id.map(SessionId::parse).transpose()?;
        match (endpoint, subject_id) {
            (Endpoint::Create, _) => self.create(body, |id| self.partitions.owns(id)),
            (Endpoint::Get, Some(id)) => self.get(id),
            (Endpoint::Get, None) => self.get(self.session_id(body)?),
            (Endpoint::Laps, id) => self.laps(id, body, false),
            (Endpoint::ArchiveLaps, id) => self.laps(id, body, true),
            (Endpoint::List, _) => self.list(body),
            (Endpoint::Delete, _) => self.delete(body),
            (Endpoint::Stats, _) => self.stats(body),
            (Endpoint::ArchiveList, _) => self.archive_list(body),
            (Endpoint::ArchiveGet, _) => self.archive_get(body),
            (Endpoint::RenewMonitor, id) => self.renew(id, body, Role::Monitor),
            (Endpoint::RenewDashboard, id) => self.renew(id, body, Role::Dashboard),
            (Endpoint::Label, _) => self.label(body),
            (Endpoint::Team, _) => self.team(body),
            (Endpoint::Stints, id) => self.stints(id, body),
            (Endpoint::Share, _) => self.share(body),
            (Endpoint::RenewLink, _) => self.renew_link(body),
            (Endpoint::Links, _) => self.links(body),
            (Endpoint::Revoke, _) => self.revoke(body),
            // Read from the trace stream on a task of their own (processor.rs
            // plans them with `App::plan` and answers with `traces::Reader`).
            (Endpoint::Trace | Endpoint::Compare, _) => Err(ServiceError::BadRequest(
                "a trace is answered off the ordered loop".into(),
            )),
        }
    }

    /// A request forwarded to `partition`, which this processor owns
    /// (`sessions.partition.<p>.<endpoint>`, server/partitions.rs): the lists and
    /// stats of that partition alone, for the processor that gathers them all
    /// (`processor` is this one's name in the merge); any other endpoint as
    /// usual, with the id in the body.
    pub fn handle_partition(
        &self,
        endpoint: Endpoint,
        partition: u32,
        processor: &str,
        body: &[u8],
    ) -> Result<Reply, ServiceError> {
        let in_partition = |id: &SessionId| self.partitions.of(id) == partition;
        match endpoint {
            Endpoint::List => {
                let request = self.list_request(body)?;
                let mut rows = self.sessions.list();
                rows.retain(|row| {
                    in_partition(&row.session_id) && request.wants(row.team.as_deref())
                });
                Ok(Reply::json(&page(rows, &request)))
            }
            Endpoint::ArchiveList => {
                let request = self.list_request(body)?;
                let mut rows = self.archived_rows();
                rows.retain(|row| {
                    in_partition(&row.session_id) && request.wants(row.team.as_deref())
                });
                Ok(Reply::json(&page(rows, &request)))
            }
            Endpoint::Stats => {
                self.optional_object(body)?;
                let live_sessions = self.sessions.count_where(in_partition);
                Ok(Reply::json(&crate::server::partitions::PartitionStats {
                    processor: processor.to_string(),
                    live_sessions,
                    stats: self.metrics.snapshot(self.sessions.load()),
                }))
            }
            // In the partition it was sent to, so that sessions spread evenly over
            // the partitions however many replicas each has.
            Endpoint::Create => self.create(body, in_partition),
            _ => self.handle_control_for(endpoint, None, body),
        }
    }

    /// What a gathered list needs before it asks the partitions: the page
    /// (offset, limit) a valid request names.
    pub fn page_request(&self, body: &[u8]) -> Result<ListRequest, ServiceError> {
        self.list_request(body)
    }

    /// The session a body-form request names, if it names one well: for
    /// forwarding it to the session's partition. A body that does not is
    /// answered here, with the error it earns.
    pub fn session_named(&self, endpoint: Endpoint, body: &[u8]) -> Option<SessionId> {
        match endpoint {
            Endpoint::Get
            | Endpoint::Delete
            | Endpoint::ArchiveGet
            | Endpoint::Laps
            | Endpoint::ArchiveLaps
            | Endpoint::RenewMonitor
            | Endpoint::RenewDashboard
            | Endpoint::Stints
            | Endpoint::Label => self.session_id(body).ok(),
            Endpoint::Share => self.session_id(body).ok(),
            Endpoint::Team => self.team_request(body).ok()?.session_id,
            // A team link's car page asks for its car; a session link's
            // renewal is its session's.
            Endpoint::RenewLink => {
                let request = self.renew_link_request(body).ok()?;
                request
                    .session_id
                    .or_else(|| self.links.get(&request.link)?.session_id)
            }
            Endpoint::Trace | Endpoint::Compare => self.trace_session(endpoint, body),
            // Links are every processor's (the links bucket), not a partition's.
            Endpoint::Links | Endpoint::Revoke => None,
            Endpoint::Create | Endpoint::List | Endpoint::Stats | Endpoint::ArchiveList => None,
        }
    }

    /// `sessions.renew.<role>.<id>` (or `sessions.renew.<role>` with the id in the
    /// body): fresh credentials for one role of a live session, good for
    /// `--credentials-ttl`. Refused once the session ended: that is how deleting
    /// or expiring a session ends its credentials within that time.
    fn renew(&self, id: Option<SessionId>, body: &[u8], role: Role) -> Result<Reply, ServiceError> {
        let id = match id {
            Some(id) => {
                self.optional_object(body)?;
                id
            }
            None => self.session_id(body)?,
        };
        let Some(issuer) = &self.issuer else {
            return Err(ServiceError::BadRequest(
                "this processor issues no credentials (started without --issuer-account)".into(),
            ));
        };
        self.sessions.get(id)?;
        let expires_at = self.credentials_expiry();
        let creds = issuer
            .for_role(&id, role, expires_at.timestamp())
            .map_err(|e| ServiceError::Unavailable(format!("cannot issue credentials: {e}")))?;
        tracing::debug!(session_id = %id, role = role.as_str(), %expires_at, "credentials renewed");
        let doc = crate::protocol::documents::Renewed {
            session_id: id,
            role: role.as_str().to_string(),
            creds,
            inbox_prefix: crate::protocol::subjects::inbox_prefix(&id),
            expires_at,
        };
        Ok(Reply {
            body: serde_json::to_vec(&doc).expect("serializes").into(),
            persist: None,
            announce: None,
        })
    }

    /// `sessions.team`: `{"team"}` → a new team link and its credentials (the
    /// team's subjects, and renewing the link), `{"team", "session_id"}` → the
    /// same, first holding that car's page (a live session of that team only).
    /// Good for `--credentials-ttl`; the link's holder renews on
    /// `sessions.renew.link.<link>` (see [`App::renew_link`]).
    fn team(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        let request = self.team_request(body)?;
        let issuer = self
            .issuer_for("team pages need no team link here (started without --issuer-account)")?;
        if let Some(id) = request.session_id {
            self.car_of_team(id, &request.team)?;
        }
        let expires_at = self.credentials_expiry();
        let link = self.links.create(
            LinkKind::Team,
            Some(request.team.clone()),
            None,
            expires_at,
            chrono::Utc::now(),
        )?;
        let creds = issuer
            .for_team(
                &request.team,
                request.session_id.as_ref(),
                &link.link,
                expires_at.timestamp(),
            )
            .map_err(|e| ServiceError::Unavailable(format!("cannot issue credentials: {e}")))?;
        tracing::info!(team = %request.team, link = %link.link, %expires_at, "team link made");
        Ok(Reply {
            persist: Some(PersistAction::LinkCreated(Box::new(link.clone()))),
            ..Reply::json(&TeamAccess {
                inbox_prefix: subjects::team_inbox_prefix(&request.team),
                team: request.team,
                link: Some(link.link),
                session_id: request.session_id,
                creds,
                expires_at,
            })
        })
    }

    /// The issuer, or why this processor gives no credentials.
    fn issuer_for(&self, why: &str) -> Result<&crate::server::credentials::Issuer, ServiceError> {
        self.issuer.as_ref().ok_or_else(|| {
            ServiceError::BadRequest(format!("this processor issues no credentials: {why}"))
        })
    }

    /// A live session labelled with `team`, or why not (404).
    fn car_of_team(&self, id: SessionId, team: &str) -> Result<(), ServiceError> {
        let session = self.sessions.get(id)?;
        if session.label.team.as_deref() != Some(team) {
            return Err(ServiceError::NotInTeam {
                id,
                team: team.to_string(),
            });
        }
        Ok(())
    }

    /// `sessions.share`: `{"session_id"}` → a new link to that live session's
    /// page and its first credentials (the session's dashboard reads, renewed
    /// on the link's own subject).
    fn share(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        let id = self.session_id(body)?;
        let issuer = self.issuer_for(
            "a session's page needs no link credentials here (started without --issuer-account)",
        )?;
        self.sessions.get(id)?;
        let expires_at = self.credentials_expiry();
        let link = self.links.create(
            LinkKind::Session,
            None,
            Some(id),
            expires_at,
            chrono::Utc::now(),
        )?;
        let access = session_link_access(issuer, id, &link.link, expires_at)?;
        tracing::info!(session_id = %id, link = %link.link, %expires_at, "session link made");
        Ok(Reply {
            persist: Some(PersistAction::LinkCreated(Box::new(link))),
            ..Reply::json(&access)
        })
    }

    /// `sessions.renew.link.<link>` (the link's holder; `{}` or
    /// `{"session_id"}` for a team link's car page) or `sessions.renew.link`
    /// with `{"link", …}` (ops): fresh credentials for a link that is not
    /// withdrawn, 403 `link_revoked` for one that is. A team link's are the
    /// team's, or one of its live cars'; a session link's, its live session's.
    fn renew_link(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        let request = self.renew_link_request(body)?;
        let link = self.links.renewable(&request.link)?;
        let issuer = self.issuer_for("links need none here (started without --issuer-account)")?;
        let expires_at = self.credentials_expiry();
        let exp = expires_at.timestamp();
        let failed = |e| ServiceError::Unavailable(format!("cannot issue credentials: {e}"));
        let access = match (link.kind, &link.team, link.session_id) {
            (LinkKind::Team, Some(team), _) => {
                if let Some(car) = request.session_id {
                    self.car_of_team(car, team)?;
                }
                let creds = issuer
                    .for_team(team, request.session_id.as_ref(), &link.link, exp)
                    .map_err(failed)?;
                LinkAccess {
                    link: link.link.clone(),
                    kind: LinkKind::Team,
                    team: Some(team.clone()),
                    session_id: request.session_id,
                    creds,
                    inbox_prefix: subjects::team_inbox_prefix(team),
                    expires_at,
                }
            }
            (LinkKind::Session, _, Some(id)) => {
                if request.session_id.is_some_and(|car| car != id) {
                    return Err(ServiceError::BadRequest(format!(
                        "link {} opens session {id} only: send {{}}",
                        link.link
                    )));
                }
                self.sessions.get(id)?;
                session_link_access(issuer, id, &link.link, expires_at)?
            }
            // A record without its team or session: not one this processor made.
            _ => return Err(LinkError::Unknown(link.link).into()),
        };
        self.links
            .renewed(&link.link, expires_at, chrono::Utc::now());
        tracing::debug!(link = %link.link, %expires_at, "link renewed");
        Ok(Reply {
            persist: Some(PersistAction::LinkRenewed {
                link: link.link,
                expires_at,
            }),
            ..Reply::json(&access)
        })
    }

    /// The body of `sessions.renew.link`: `{"link", "session_id"?}`.
    fn renew_link_request(&self, body: &[u8]) -> Result<RenewLinkRequest, ServiceError> {
        validate_object(body, self.limits.max_payload)?;
        serde_json::from_slice(body).map_err(|e| {
            ServiceError::BadRequest(format!(
                r#"{e}: send {{"link": "<link id>"}} or {{"link": "<link id>", "session_id": "<uuid>"}}"#
            ))
        })
    }

    /// `sessions.renew.link.<link>` with `{}` or `{"session_id"}`, as the body
    /// form's request: the link comes from the subject, which the link's
    /// credentials pin to their own link.
    pub fn renew_link_subject_request(
        &self,
        token: &str,
        body: &[u8],
    ) -> Result<Bytes, ServiceError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Car {
            #[serde(default)]
            session_id: Option<SessionId>,
        }
        let link = LinkId::parse(token).map_err(LinkError::from)?;
        self.optional_object(body)?;
        let car = if body.trim_ascii().is_empty() {
            Car { session_id: None }
        } else {
            serde_json::from_slice(body).map_err(|e| {
                ServiceError::BadRequest(format!(r#"{e}: send {{}} or {{"session_id": "<uuid>"}}"#))
            })?
        };
        let request = RenewLinkRequest {
            link,
            session_id: car.session_id,
        };
        Ok(serde_json::to_vec(&request).expect("serializes").into())
    }

    /// `sessions.links`: `{}` (every link), or `{"team"}`, `{"session_id"}`,
    /// `{"link"}` → those links, live or withdrawn, oldest first, until their
    /// last credentials expire.
    fn links(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        let request = self.links_request(body)?;
        let links = self.links.list(&request, chrono::Utc::now());
        Ok(Reply::json(&LinkList {
            count: links.len(),
            links,
        }))
    }

    /// `sessions.revoke`: `{"link"}`, `{"team"}` or `{"session_id"}` → those
    /// links withdrawn: refused at once by this processor, and by every other
    /// once stored (before the reply).
    fn revoke(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        let request = self.links_request(body)?;
        if request == LinksRequest::default() {
            return Err(ServiceError::BadRequest(
                r#"name what to withdraw: send {"link": "<link id>"}, {"team": "<label>"} or {"session_id": "<uuid>"}"#
                    .into(),
            ));
        }
        let revoked = self.links.revoke(&request, chrono::Utc::now())?;
        for link in &revoked {
            tracing::info!(link = %link.link, team = ?link.team, session_id = ?link.session_id, "link withdrawn");
        }
        Ok(Reply {
            persist: (!revoked.is_empty()).then(|| PersistAction::LinksRevoked(revoked.clone())),
            ..Reply::json(&Revoked {
                revoked: revoked.len(),
                links: revoked,
            })
        })
    }

    fn links_request(&self, body: &[u8]) -> Result<LinksRequest, ServiceError> {
        self.optional_object(body)?;
        if body.trim_ascii().is_empty() {
            return Ok(LinksRequest::default());
        }
        let hint =
            r#"send {}, {"link": "<link id>"}, {"team": "<label>"} or {"session_id": "<uuid>"}"#;
        serde_json::from_slice(body).map_err(|e| ServiceError::BadRequest(format!("{e}: {hint}")))
    }

    fn team_request(&self, body: &[u8]) -> Result<TeamRequest, ServiceError> {
        validate_object(body, self.limits.max_payload)?;
        let hint = r#"send {"team": "<label>"} or {"team": "<label>", "session_id": "<uuid>"}"#;
        let request: TeamRequest = serde_json::from_slice(body)
            .map_err(|e| ServiceError::BadRequest(format!("{e}: {hint}")))?;
        Label {
            team: Some(request.team.clone()),
            car: None,
        }
        .check()
        .map_err(|e| ServiceError::BadRequest(format!("{e}: {hint}")))?;
        Ok(request)
    }

    /// `sessions.team.<team token>`: what team links made before links had ids
    /// renewed on. Refused (403 `link_required`), so every team link that still
    /// renews can be withdrawn; such links stop within `--credentials-ttl` of
    /// the upgrade.
    pub fn team_subject_request(&self, token: &str, _body: &[u8]) -> Result<Bytes, ServiceError> {
        subjects::team_of_token(token).ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "not a team token: {token:?} (protocol::subjects::team_token)"
            ))
        })?;
        Err(LinkError::Required.into())
    }

    /// When credentials issued now expire.
    fn credentials_expiry(&self) -> chrono::DateTime<chrono::Utc> {
        let ttl = chrono::Duration::from_std(self.limits.credentials_ttl)
            .unwrap_or(chrono::TimeDelta::MAX);
        chrono::Utc::now()
            .checked_add_signed(ttl)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }

    /// `sessions.create`: `{}` or an empty body → the new session document, with
    /// its credentials when this processor issues them.
    /// `accept` says which ids this processor may hand out (see
    /// `Sessions::create_where`).
    fn create(
        &self,
        body: &[u8],
        accept: impl Fn(&SessionId) -> bool,
    ) -> Result<Reply, ServiceError> {
        let label = self.create_request(body)?;
        let snapshot = self.sessions.create_where(accept, label)?;
        self.metrics.session_created();
        tracing::info!(session_id = %snapshot.session_id, via = "request", "session created");
        let mut doc = snapshot.document();
        if let Some(issuer) = &self.issuer {
            // Short-lived: holders renew them while the session lives
            // (`sessions.renew.*`), so an ended session's credentials stop working
            // within --credentials-ttl.
            let expires = self.credentials_expiry().timestamp();
            let credentials = issuer
                .for_session(&snapshot.session_id, expires)
                .map_err(|e| ServiceError::Unavailable(format!("cannot issue credentials: {e}")))?;
            doc.credentials = Some(credentials);
        }
        let body = serde_json::to_vec(&doc)
            .expect("a session document serializes")
            .into();
        Ok(Reply {
            body,
            persist: Some(PersistAction::Session(snapshot.session_id)),
            announce: Some(Announcement::new(
                snapshot.session_id,
                Event::Created,
                snapshot.created_at,
                "request",
                None,
            )),
        })
    }

    /// `sessions.get`: `{"session_id": …}` (or `sessions.get.<id>`) → the session
    /// document, with its fuel strategy when its frames give one.
    fn get(&self, id: SessionId) -> Result<Reply, ServiceError> {
        let snapshot = self.sessions.get(id)?;
        let mut doc = snapshot.document();
        let laps = match (&snapshot.telemetry, &snapshot.field) {
            (None, None) => Vec::new(),
            _ => self.sessions.laps(id).unwrap_or_default(),
        };
        if let Some(frame) = &snapshot.telemetry {
            doc.strategy = race::strategy(&laps, &frame.body, self.limits.fuel_reserve_laps);
        }
        // Stored fields held to their schema at ingest, so this reads.
        if let Some(field) = &snapshot.field
            && let Ok(field) = crate::protocol::field::Field::parse(&field.body)
        {
            let laps: Vec<race::Lap> = laps.iter().map(|r| race::Lap::of(r)).collect();
            let loss = crate::server::rejoin::loss_of(&laps, self.limits.pit_loss);
            doc.rejoin = crate::server::rejoin::rejoin(&field, loss);
        }
        let alerts = self.alert_board().active(&id);
        doc.alerts = Some(alerts);
        Ok(Reply::json(&doc))
    }

    /// `sessions.stints[.<id>]`: `{}` (or `{"session_id"}` without an id in the
    /// subject) → the session's stints from its lap history, live or ended.
    fn stints(&self, id: Option<SessionId>, body: &[u8]) -> Result<Reply, ServiceError> {
        let id = match id {
            Some(id) => {
                self.optional_object(body)?;
                id
            }
            None => self.session_id(body)?,
        };
        let (records, ended) = match self.sessions.laps(id) {
            Ok(records) => (records, false),
            Err(e) => match self.sessions.ended(id) {
                Some(ended) => (ended.laps.records(), true),
                None => return Err(e.into()),
            },
        };
        let laps: Vec<race::Lap> = records.iter().map(|r| race::Lap::of(r)).collect();
        let mut stints = race::stints(&laps);
        // An ended session's last stint runs on no longer: the session's end ended it.
        if ended && let Some(last) = stints.last_mut() {
            last.ended_by.get_or_insert_with(|| "session_end".into());
        }
        Ok(Reply::json(&Stints {
            session_id: id,
            stints,
        }))
    }

    /// `sessions.list`: `{}`, or `{"limit": n, "offset": k}` → one page of live
    /// sessions, oldest first, with `next_offset` (null on the last page).
    fn list(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        let request = self.list_request(body)?;
        let mut rows = self.sessions.list();
        rows.retain(|row| request.wants(row.team.as_deref()));
        Ok(Reply::json(&page(rows, &request)))
    }

    /// The body of `sessions.create`: `{}` or an empty body, or the session's
    /// `team` and `car` labels (other members are ignored).
    fn create_request(&self, body: &[u8]) -> Result<Label, ServiceError> {
        self.optional_object(body)?;
        if body.trim_ascii().is_empty() {
            return Ok(Label::default());
        }
        let hint = r#"send {} or {"team": "<label>", "car": "<label>"}"#;
        let label: Label = serde_json::from_slice(body)
            .map_err(|e| ServiceError::BadRequest(format!("{e}: {hint}")))?;
        label
            .check()
            .map_err(|e| ServiceError::BadRequest(format!("{e}: {hint}")))?;
        Ok(label)
    }

    pub(crate) fn list_request(&self, body: &[u8]) -> Result<ListRequest, ServiceError> {
        self.optional_object(body)?;
        if body.trim_ascii().is_empty() {
            return Ok(ListRequest::default());
        }
        let hint = r#"send {} or {"limit": <1 or more; pages hold at most 5000>, "offset": <n>, "team": "<label>"}"#;
        let request: ListRequest = serde_json::from_slice(body)
            .map_err(|e| ServiceError::BadRequest(format!("{e}: {hint}")))?;
        // A limit above the page's most is capped (ListRequest::bounds), as
        // docs/PROTOCOL.md says: the reply's next_offset leads on.
        if request.limit == Some(0) {
            return Err(ServiceError::BadRequest(format!(
                "limit out of range: {hint}"
            )));
        }
        Ok(request)
    }

    /// `sessions.delete`: `{"session_id": …}` → `{"deleted": true, …}` with the final
    /// document; later data for the id is refused.
    fn delete(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        let id = self.session_id(body)?;
        let ended = self.sessions.delete(id)?;
        self.metrics.session_ended(ended.reason);
        tracing::info!(session_id = %id, "session deleted");
        let reply = Reply::json(&Deleted {
            deleted: true,
            session_id: id,
            deleted_at: ended.at,
            session: ended.last.document(),
        });
        let announce =
            Announcement::new(id, Event::Deleted, ended.at, "request", Some(&ended.last));
        Ok(Reply {
            announce: Some(announce),
            persist: Some(PersistAction::End(Box::new(ended))),
            ..reply
        })
    }

    /// `sessions.label`: `{"session_id", "team", "car"}` → the session document
    /// with its labels changed: a label given is set (`null` clears it), one not
    /// given is kept. Stored before the reply, like a create.
    fn label(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        let id = self.session_id(body)?;
        let hint =
            r#"send {"session_id": "<uuid>", "team": "<label>" or null, "car": "<label>" or null}"#;
        let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
            .map_err(|e| ServiceError::BadRequest(format!("{e}: {hint}")))?;
        let change = |name: &str| -> Result<Option<Option<String>>, ServiceError> {
            match fields.get(name) {
                None => Ok(None),
                Some(serde_json::Value::Null) => Ok(Some(None)),
                Some(serde_json::Value::String(s)) => Ok(Some(Some(s.clone()))),
                Some(_) => Err(ServiceError::BadRequest(format!(
                    "{name} must be a string or null: {hint}"
                ))),
            }
        };
        let (team, car) = (change("team")?, change("car")?);
        if team.is_none() && car.is_none() {
            return Err(ServiceError::BadRequest(format!(
                "nothing to change: {hint}"
            )));
        }
        let snapshot = self.sessions.relabel(id, |label| {
            if let Some(team) = team {
                label.team = team;
            }
            if let Some(car) = car {
                label.car = car;
            }
            label.check()
        })?;
        tracing::info!(session_id = %id, team = ?snapshot.label.team, car = ?snapshot.label.car, "session labelled");
        Ok(Reply {
            body: snapshot.to_json().into(),
            persist: Some(PersistAction::Session(id)),
            announce: None,
        })
    }

    /// `sessions.archive.list`: like `sessions.list`, for ended sessions, most
    /// recently ended first.
    fn archive_list(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        let request = self.list_request(body)?;
        let mut rows = self.archived_rows();
        rows.retain(|row| request.wants(row.team.as_deref()));
        Ok(Reply::json(&page(rows, &request)))
    }

    /// Every archived session, most recently ended first.
    fn archived_rows(&self) -> Vec<ArchivedSummary> {
        self.sessions
            .list_ended()
            .iter()
            .map(|e| ArchivedSummary {
                session_id: e.last.session_id,
                team: e.last.label.team.clone(),
                car: e.last.label.car.clone(),
                created_at: e.last.created_at,
                last_update: e.last.last_update,
                ended_at: e.at,
                reason: e.reason,
                telemetry_count: e.last.stats.telemetry_count,
            })
            .collect()
    }

    /// `sessions.archive.get`: `{"session_id": …}` → when and why it ended, and its
    /// final document.
    fn archive_get(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        let id = self.session_id(body)?;
        let ended = self
            .sessions
            .ended(id)
            .ok_or(SessionError::NotArchived(id))?;
        Ok(Reply::json(&ArchivedSession {
            session_id: id,
            ended_at: ended.at,
            reason: ended.reason,
            session: ended.last.document(),
        }))
    }

    /// `sessions.laps[.<id>]` and `sessions.archive.laps[.<id>]`: `{}` or
    /// `{"from_lap": n, "limit": k}` (plus `"session_id"` without an id in the
    /// subject) → one page of the session's completed laps, oldest first.
    fn laps(
        &self,
        id: Option<SessionId>,
        body: &[u8],
        archived: bool,
    ) -> Result<Reply, ServiceError> {
        let id = match id {
            Some(id) => id,
            None => self.session_id(body)?,
        };
        let request = self.lap_request(body)?;
        let records = if archived {
            self.sessions
                .ended(id)
                .ok_or(SessionError::NotArchived(id))?
                .laps
                .records()
        } else {
            self.sessions.laps(id)?
        };
        Ok(Reply {
            body: crate::server::laps::page(id, &records, &request).into(),
            persist: None,
            announce: None,
        })
    }

    fn lap_request(&self, body: &[u8]) -> Result<crate::server::laps::PageRequest, ServiceError> {
        let trimmed = body.trim_ascii();
        // Empty, or a bare id (`nats req sessions.laps <uuid>`): the first page.
        if (trimmed.is_empty() && body.len() <= self.limits.max_payload)
            || std::str::from_utf8(trimmed).is_ok_and(|s| SessionId::parse(s).is_ok())
        {
            return Ok(crate::server::laps::PageRequest::default());
        }
        validate_object(body, self.limits.max_payload)?;
        let hint = || {
            format!(
                r#"send {{}} or {{"from_lap": <lap number>, "limit": <1..{}>}}"#,
                crate::server::laps::PAGE_MAX_LIMIT
            )
        };
        let request: crate::server::laps::PageRequest = serde_json::from_slice(body)
            .map_err(|e| ServiceError::BadRequest(format!("{e}: {}", hint())))?;
        if request.limit == Some(0) || request.limit > Some(crate::server::laps::PAGE_MAX_LIMIT) {
            return Err(ServiceError::BadRequest(format!(
                "limit out of range: {}",
                hint()
            )));
        }
        Ok(request)
    }

    /// `sessions.stats`: service-wide counters.
    fn stats(&self, body: &[u8]) -> Result<Reply, ServiceError> {
        self.optional_object(body)?;
        Ok(Reply::json(&self.metrics.snapshot(self.sessions.load())))
    }

    /// Bodies of create/list/stats: nothing, or a JSON object (whose content is not used).
    pub(crate) fn optional_object(&self, body: &[u8]) -> Result<(), ServiceError> {
        if body.trim_ascii().is_empty() && body.len() <= self.limits.max_payload {
            return Ok(());
        }
        Ok(validate_object(body, self.limits.max_payload)?)
    }

    /// The session id of a get/delete request: `{"session_id": "<uuid>"}`. A bare id
    /// as the whole body is accepted too, so `nats req sessions.get <uuid>` works.
    fn session_id(&self, body: &[u8]) -> Result<SessionId, ServiceError> {
        let trimmed = body.trim_ascii();
        if trimmed.is_empty() && body.len() <= self.limits.max_payload {
            return Err(ServiceError::BadRequest(
                r#"missing session_id: send {"session_id": "<uuid>"}"#.into(),
            ));
        }
        let bare_id = std::str::from_utf8(trimmed)
            .ok()
            .and_then(|s| SessionId::parse(s).ok());
        if let Some(id) = bare_id {
            return Ok(id);
        }
        validate_object(body, self.limits.max_payload)?;
        let request: IdRequest<'_> = serde_json::from_slice(body).map_err(|e| {
            ServiceError::BadRequest(format!(r#"{e}: send {{"session_id": "<uuid>"}}"#))
        })?;
        Ok(SessionId::parse(&request.session_id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::app::Limits;
    use serde_json::Value;

    fn app() -> App {
        App::new(Limits {
            max_payload: 1024,
            max_sessions: 3,
            ..Default::default()
        })
    }

    fn endpoint(name: &str) -> Endpoint {
        Endpoint::from_name(name).expect("an endpoint")
    }

    fn ok(app: &App, name: &str, body: &str) -> Value {
        let reply = app.handle_control(endpoint(name), body.as_bytes()).unwrap();
        serde_json::from_slice(&reply.body).unwrap()
    }

    fn code(app: &App, name: &str, body: &[u8]) -> u16 {
        app.handle_control(endpoint(name), body).unwrap_err().code()
    }

    #[test]
    fn create_accepts_empty_and_object_bodies_only() {
        let app = app();
        ok(&app, "create", "");
        ok(&app, "create", "{}");
        assert_eq!(code(&app, "create", b"[]"), 400);
        assert_eq!(code(&app, "create", b"{"), 400);
        assert_eq!(code(&app, "create", &[b' '; 2000]), 413);
        ok(&app, "create", " {\"anything\": 1} ");
        assert_eq!(code(&app, "create", b""), 503);
    }

    #[test]
    fn get_takes_an_object_or_a_bare_id() {
        let app = app();
        let id = ok(&app, "create", "")["session_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            ok(&app, "get", &format!(r#"{{"session_id": "{id}"}}"#))["session_id"],
            id
        );
        assert_eq!(ok(&app, "get", &format!(" {id}\n"))["session_id"], id);
    }

    #[test]
    fn get_and_delete_refuse_bad_requests_with_400() {
        let app = app();
        for body in [
            "",
            "{}",
            r#"{"session_id": 42}"#,
            r#"{"session_id": "nope"}"#,
            r#"{"session_id": "../../etc"}"#,
            "not json",
            "[1]",
            "\"x\"",
        ] {
            assert_eq!(code(&app, "get", body.as_bytes()), 400, "{body:?}");
            assert_eq!(code(&app, "delete", body.as_bytes()), 400, "{body:?}");
        }
    }

    #[test]
    fn unknown_and_deleted_sessions_are_404() {
        let app = app();
        let unknown = format!(r#"{{"session_id": "{}"}}"#, SessionId::new_v4());
        assert_eq!(code(&app, "get", unknown.as_bytes()), 404);
        assert_eq!(code(&app, "delete", unknown.as_bytes()), 404);
        let id = ok(&app, "create", "")["session_id"]
            .as_str()
            .unwrap()
            .to_string();
        let req = format!(r#"{{"session_id": "{id}"}}"#);
        let deleted = ok(&app, "delete", &req);
        assert_eq!(deleted["deleted"], true);
        assert_eq!(deleted["session"]["session_id"], id);
        assert_eq!(code(&app, "get", req.as_bytes()), 404);
        assert_eq!(code(&app, "delete", req.as_bytes()), 404);
    }

    #[test]
    fn create_and_delete_ask_for_storage_before_replying() {
        let app = app();
        let reply = app.handle_control(endpoint("create"), b"").unwrap();
        let Some(PersistAction::Session(id)) = reply.persist else {
            panic!("create must be stored: {:?}", reply.persist)
        };
        let req = format!(r#"{{"session_id": "{id}"}}"#);
        let reply = app
            .handle_control(endpoint("delete"), req.as_bytes())
            .unwrap();
        let Some(PersistAction::End(last)) = reply.persist else {
            panic!("delete must be archived: {:?}", reply.persist)
        };
        assert_eq!(last.last.session_id, id);
        assert!(app.handle_control(endpoint("get"), req.as_bytes()).is_err());
        assert!(
            app.handle_control(endpoint("list"), b"")
                .unwrap()
                .persist
                .is_none()
        );
    }

    #[test]
    fn create_and_delete_announce() {
        let app = app();
        let reply = app.handle_control(endpoint("create"), b"").unwrap();
        let created = reply.announce.unwrap();
        assert_eq!(created.event, Event::Created);
        let req = format!(r#"{{"session_id": "{}"}}"#, created.session_id);
        let deleted = app
            .handle_control(endpoint("delete"), req.as_bytes())
            .unwrap()
            .announce
            .unwrap();
        assert_eq!(deleted.event, Event::Deleted);
        let body: Value = serde_json::from_slice(&deleted.body).unwrap();
        assert_eq!(body["event"], "deleted");
        assert_eq!(
            body["session"]["session_id"],
            created.session_id.to_string()
        );
    }

    #[test]
    fn list_pages_through_every_session() {
        let app = App::new(Limits {
            max_payload: 1024,
            max_sessions: 10,
            ..Default::default()
        });
        for _ in 0..5 {
            ok(&app, "create", "");
        }
        let first = ok(&app, "list", r#"{"limit": 2}"#);
        assert_eq!(
            (first["total"].as_u64(), first["count"].as_u64()),
            (Some(5), Some(2))
        );
        assert_eq!(first["next_offset"], 2);
        let last = ok(&app, "list", r#"{"limit": 2, "offset": 4}"#);
        assert_eq!(last["count"], 1);
        assert_eq!(last["next_offset"], Value::Null);
        let everything = ok(&app, "list", "{}");
        assert_eq!(everything["count"], 5);
        assert_eq!(code(&app, "list", br#"{"limit": "ten"}"#), 400);
        assert_eq!(code(&app, "list", br#"{"offset": -1}"#), 400);
        assert_eq!(code(&app, "list", br#"{"limit": 0}"#), 400);
        // Above the most a page holds: capped, not refused.
        assert_eq!(ok(&app, "list", r#"{"limit": 5001}"#)["count"], 5);
    }

    #[test]
    fn a_withdrawn_link_is_refused_and_the_teams_other_link_renews() {
        let signing = nkeys::KeyPair::new_account();
        let issuer = crate::server::credentials::Issuer::new(
            &nkeys::KeyPair::new_account().public_key(),
            &signing.seed().unwrap(),
        )
        .unwrap();
        let app = App::with_issuer(
            Limits {
                max_payload: 1024,
                ..Default::default()
            },
            Some(issuer),
        );
        let car = ok(&app, "create", r#"{"team": "Blue"}"#)["session_id"]
            .as_str()
            .unwrap()
            .to_string();
        let link = |body: &str| {
            let reply = app
                .handle_control(endpoint("team"), body.as_bytes())
                .unwrap();
            assert!(matches!(reply.persist, Some(PersistAction::LinkCreated(_))));
            let access: Value = serde_json::from_slice(&reply.body).unwrap();
            access["link"].as_str().unwrap().to_string()
        };
        let (leaked, kept) = (link(r#"{"team": "Blue"}"#), link(r#"{"team": "Blue"}"#));
        let renew = |link: &str, car: Option<&str>| {
            let body = match car {
                Some(car) => format!(r#"{{"link": "{link}", "session_id": "{car}"}}"#),
                None => format!(r#"{{"link": "{link}"}}"#),
            };
            app.handle_control(endpoint("renew.link"), body.as_bytes())
        };
        let renewed = renew(&leaked, Some(&car)).unwrap();
        assert!(matches!(
            renewed.persist,
            Some(PersistAction::LinkRenewed { .. })
        ));
        let revoked = ok(&app, "revoke", &format!(r#"{{"link": "{leaked}"}}"#));
        assert_eq!(revoked["revoked"], 1);
        for car in [None, Some(car.as_str())] {
            let refused = renew(&leaked, car).unwrap_err();
            assert_eq!((refused.code(), refused.reason()), (403, "link_revoked"));
        }
        renew(&kept, Some(&car)).unwrap();
        // A session link, withdrawn with its session's: the session lives on.
        let shared = ok(&app, "share", &format!(r#"{{"session_id": "{car}"}}"#));
        let session_link = shared["link"].as_str().unwrap();
        renew(session_link, None).unwrap();
        let revoked = ok(&app, "revoke", &format!(r#"{{"session_id": "{car}"}}"#));
        assert_eq!(revoked["revoked"], 1);
        assert_eq!(renew(session_link, None).unwrap_err().code(), 403);
        ok(&app, "get", &format!(r#"{{"session_id": "{car}"}}"#));
        assert_eq!(ok(&app, "links", r#"{"team": "Blue"}"#)["count"], 2);
        // Nothing named, nothing withdrawn; the old team subject is refused.
        assert_eq!(code(&app, "revoke", b"{}"), 400);
        let old = app.team_subject_request("Blue", b"{}").unwrap_err();
        assert_eq!((old.code(), old.reason()), (403, "link_required"));
    }

    #[test]
    fn list_and_stats_count_sessions() {
        let app = app();
        ok(&app, "create", "");
        ok(&app, "create", "");
        assert_eq!(
            ok(&app, "list", "")["sessions"].as_array().unwrap().len(),
            2
        );
        let stats = ok(&app, "stats", "{}");
        assert_eq!(stats["live_sessions"], 2);
        assert_eq!(stats["sessions_created"], 2);
    }
}
