//! Shared links and their withdrawal (docs/SECURITY.md, "Taking a link back").
//!
//! A link (`sessions share --team Blue`, `sessions share <id>`) is a page URL
//! whose fragment holds short-lived credentials that its page renews for as
//! long as it is open. Each link has an id, and its credentials may renew on
//! `sessions.renew.link.<its id>` and no other subject, so the broker vouches
//! for the id on every renewal. Withdrawing a link marks it revoked here and
//! in the links bucket (store/links.rs): its renewals are refused from then on,
//! so what it holds stops working when its current credentials expire, within
//! `--credentials-ttl`.
//!
//! This module is the processor's memory of the links, shared by every
//! processor through the bucket: pure, no I/O. A renewal is checked here, then
//! against the bucket before it is answered (a compare-and-set, so a renewal
//! that races a withdrawal on another processor loses). A link this
//! processor does not know is refused: links are made only by `sessions.team`
//! and `sessions.share`, and forgotten once their last credentials expired,
//! when nothing they issued works any more.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::protocol::documents::{Link, LinkKind, LinksRequest};
use crate::protocol::id::{LinkId, MalformedLinkId, SessionId};

/// Links held at most by default (`--max-links`): a team's engineers, and a
/// link per car shared, many times over. Unused links drop out once their
/// credentials expire, so this bounds the links made within one
/// `--credentials-ttl` plus those pages keep open.
pub const DEFAULT_MAX_LINKS: usize = 4096;

/// How long past its last credentials' expiry a link is still kept: the
/// broker's clock and ours may differ by this much.
pub const EXPIRY_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// Why a link request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Withdrawn by `sessions.revoke`: its renewals are refused from then on.
    #[error("link {0} was withdrawn by the team (sessions.revoke); ask for a new one")]
    Revoked(LinkId),
    /// Never made, or forgotten after its credentials ran out unused.
    #[error("unknown link {0}: it ran out unused, or was never made; ask for a new one")]
    Unknown(LinkId),
    /// `--max-links` links are held.
    #[error(
        "{held} links are held, the most this processor keeps (--max-links {max}): withdraw \
         some (paddock sessions revoke) or wait for unused ones to run out (--credentials-ttl)"
    )]
    TooMany { held: usize, max: usize },
    /// A team link made before links had ids asked on `sessions.team.<team>`.
    #[error(
        "this team link was made before links had ids, and is no longer renewed: ask for a new \
         one (paddock sessions share --team)"
    )]
    Required,
    #[error(transparent)]
    Malformed(#[from] MalformedLinkId),
}

impl LinkError {
    pub fn code(&self) -> u16 {
        match self {
            LinkError::Revoked(_) | LinkError::Required => 403,
            LinkError::Unknown(_) => 404,
            LinkError::TooMany { .. } => 503,
            LinkError::Malformed(_) => 400,
        }
    }

    /// The stable label clients match on (the page's "withdrawn" message).
    pub fn reason(&self) -> &'static str {
        match self {
            LinkError::Revoked(_) => "link_revoked",
            LinkError::Unknown(_) => "unknown_link",
            LinkError::TooMany { .. } => "too_many_links",
            LinkError::Required => "link_required",
            LinkError::Malformed(_) => "malformed_link",
        }
    }
}

/// Every link this processor knows of, live or withdrawn, until its last
/// credentials have expired.
#[derive(Debug)]
pub struct Links {
    held: std::sync::Mutex<HashMap<LinkId, Link>>,
    /// `--max-links`: past it a new link is refused (503 `too_many_links`).
    max: usize,
}

impl Default for Links {
    fn default() -> Self {
        Links::new(DEFAULT_MAX_LINKS)
    }
}

impl Links {
    pub fn new(max: usize) -> Self {
        Links {
            held: Default::default(),
            max,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<LinkId, Link>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new link whose first credentials expire at `expires_at`, held here
    /// (the caller stores it before it answers). Refused past `--max-links`,
    /// counting the links whose credentials still work.
    pub fn create(
        &self,
        kind: LinkKind,
        team: Option<String>,
        session_id: Option<SessionId>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Link, LinkError> {
        let mut held = self.held();
        held.retain(|_, link| alive(link, now));
        if held.len() >= self.max {
            return Err(LinkError::TooMany {
                held: held.len(),
                max: self.max,
            });
        }
        let link = Link {
            link: LinkId::new_random(),
            kind,
            team,
            session_id,
            created_at: now,
            renewed_at: None,
            renewals: 0,
            expires_at,
            revoked_at: None,
        };
        held.insert(link.link.clone(), link.clone());
        Ok(link)
    }

    /// The link, if it may be renewed: known and not withdrawn.
    pub fn renewable(&self, id: &LinkId) -> Result<Link, LinkError> {
        match self.held().get(id) {
            None => Err(LinkError::Unknown(id.clone())),
            Some(link) if link.revoked_at.is_some() => Err(LinkError::Revoked(id.clone())),
            Some(link) => Ok(link.clone()),
        }
    }

    /// The link as it is known here, withdrawn or not.
    pub fn get(&self, id: &LinkId) -> Option<Link> {
        self.held().get(id).cloned()
    }

    /// A renewal answered: new credentials that expire at `expires_at`.
    pub fn renewed(&self, id: &LinkId, expires_at: DateTime<Utc>, now: DateTime<Utc>) {
        if let Some(link) = self.held().get_mut(id) {
            renew(link, expires_at, now);
        }
    }

    /// Withdraws the links `request` names, at once here; answers those it
    /// withdrew now (for the caller to store), not those withdrawn before. A
    /// request naming one link that is not known is `Unknown`.
    pub fn revoke(
        &self,
        request: &LinksRequest,
        now: DateTime<Utc>,
    ) -> Result<Vec<Link>, LinkError> {
        let mut held = self.held();
        if let Some(id) = &request.link
            && !held.contains_key(id)
        {
            return Err(LinkError::Unknown(id.clone()));
        }
        let mut revoked: Vec<Link> = held
            .values_mut()
            .filter(|link| link.revoked_at.is_none() && wanted(request, link))
            .map(|link| {
                link.revoked_at = Some(now);
                link.clone()
            })
            .collect();
        revoked.sort_by(|a, b| (a.created_at, &a.link).cmp(&(b.created_at, &b.link)));
        Ok(revoked)
    }

    /// The links `request` names (every link for an empty one), oldest first.
    pub fn list(&self, request: &LinksRequest, now: DateTime<Utc>) -> Vec<Link> {
        let mut links: Vec<Link> = self
            .held()
            .values()
            .filter(|link| alive(link, now) && wanted(request, link))
            .cloned()
            .collect();
        links.sort_by(|a, b| (a.created_at, &a.link).cmp(&(b.created_at, &b.link)));
        links
    }

    /// A link as another processor (or an earlier run) stored it: merged with
    /// what is known here, so neither a withdrawal nor a renewal is lost
    /// whichever arrives first.
    pub fn apply(&self, stored: Link) {
        let mut held = self.held();
        match held.get_mut(&stored.link) {
            None => {
                held.insert(stored.link.clone(), stored);
            }
            Some(link) => {
                link.revoked_at = match (link.revoked_at, stored.revoked_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                link.renewed_at = link.renewed_at.max(stored.renewed_at);
                link.renewals = link.renewals.max(stored.renewals);
                link.expires_at = link.expires_at.max(stored.expires_at);
            }
        }
    }

    /// Forgets the links whose last credentials expired (with
    /// [`EXPIRY_GRACE`]): nothing they issued works, and an unknown link is
    /// refused. Answers how many were forgotten.
    pub fn prune(&self, now: DateTime<Utc>) -> usize {
        let mut held = self.held();
        let before = held.len();
        held.retain(|_, link| alive(link, now));
        before - held.len()
    }
}

/// A renewal applied to a link's record.
pub fn renew(link: &mut Link, expires_at: DateTime<Utc>, now: DateTime<Utc>) {
    link.renewed_at = Some(now);
    link.renewals += 1;
    link.expires_at = link.expires_at.max(expires_at);
}

/// Whether anything the link issued may still work.
fn alive(link: &Link, now: DateTime<Utc>) -> bool {
    link.expires_at + EXPIRY_GRACE > now
}

/// Whether `request` names `link`.
fn wanted(request: &LinksRequest, link: &Link) -> bool {
    request.link.as_ref().is_none_or(|id| *id == link.link)
        && request
            .team
            .as_ref()
            .is_none_or(|team| link.team.as_ref() == Some(team))
        && request
            .session_id
            .is_none_or(|id| link.session_id == Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn team(team: &str) -> LinksRequest {
        LinksRequest {
            team: Some(team.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_withdrawn_link_is_refused_and_its_teams_others_are_not() {
        let links = Links::new(10);
        let blue = |n| {
            links
                .create(LinkKind::Team, Some("Blue".into()), None, at(300), at(n))
                .unwrap()
        };
        let (one, two) = (blue(0), blue(1));
        let red = links
            .create(LinkKind::Team, Some("Red".into()), None, at(300), at(2))
            .unwrap();
        let request = LinksRequest {
            link: Some(one.link.clone()),
            ..Default::default()
        };
        let revoked = links.revoke(&request, at(10)).unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].revoked_at, Some(at(10)));
        assert_eq!(
            links.renewable(&one.link),
            Err(LinkError::Revoked(one.link.clone()))
        );
        assert!(links.renewable(&two.link).is_ok());
        // Withdrawn again: nothing new.
        assert!(links.revoke(&request, at(11)).unwrap().is_empty());
        // The whole team: the other Blue link, not Red's.
        let revoked = links.revoke(&team("Blue"), at(12)).unwrap();
        assert_eq!(
            revoked.iter().map(|l| &l.link).collect::<Vec<_>>(),
            [&two.link]
        );
        assert!(links.renewable(&red.link).is_ok());
        assert_eq!(links.list(&team("Blue"), at(13)).len(), 2);
        let unknown = LinkId::new_random();
        assert_eq!(
            links.renewable(&unknown),
            Err(LinkError::Unknown(unknown.clone()))
        );
        let request = LinksRequest {
            link: Some(unknown.clone()),
            ..Default::default()
        };
        assert_eq!(
            links.revoke(&request, at(14)),
            Err(LinkError::Unknown(unknown))
        );
    }

    #[test]
    fn links_are_bounded_and_forgotten_once_their_credentials_expired() {
        let links = Links::new(2);
        let make = |now| {
            links.create(
                LinkKind::Session,
                None,
                Some(SessionId::new_v4()),
                at(now + 300),
                at(now),
            )
        };
        let first = make(0).unwrap();
        make(1).unwrap();
        let refused = make(2).unwrap_err();
        assert_eq!((refused.code(), refused.reason()), (503, "too_many_links"));
        // Renewed, the first lives on; the second runs out unused.
        links.renewed(&first.link, at(600), at(200));
        let renewed = links.get(&first.link).unwrap();
        assert_eq!((renewed.renewals, renewed.renewed_at), (1, Some(at(200))));
        let after = 301 + EXPIRY_GRACE.num_seconds();
        assert_eq!(links.prune(at(after)), 1);
        make(after).unwrap();
        assert!(links.renewable(&first.link).is_ok());
    }

    #[test]
    fn a_stored_withdrawal_is_kept_whichever_arrives_first() {
        let links = Links::new(10);
        let link = links
            .create(LinkKind::Team, Some("Blue".into()), None, at(300), at(0))
            .unwrap();
        let mut withdrawn = link.clone();
        withdrawn.revoked_at = Some(at(5));
        links.apply(withdrawn);
        // A renewal another processor stored before it heard of the withdrawal.
        let mut renewed = link.clone();
        renew(&mut renewed, at(400), at(4));
        links.apply(renewed);
        let held = links.get(&link.link).unwrap();
        assert_eq!(held.revoked_at, Some(at(5)));
        assert_eq!(held.expires_at, at(400));
        assert_eq!(
            LinkError::Revoked(link.link.clone()).reason(),
            "link_revoked"
        );
        assert!(links.renewable(&link.link).is_err());
    }
}
