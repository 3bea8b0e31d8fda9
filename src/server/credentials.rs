//! Per-session credentials: NATS user JWTs the processor issues at `sessions.create`,
//! so that a monitor may write into its own session only and a dashboard may read
//! that session only (docs/SECURITY.md, "Per-session access").
//!
//! The broker runs in operator mode (decentralized JWT auth). The processor holds a
//! *signing* key of paddock's account, which can issue users of that account and
//! nothing else; the broker checks every connection against the account's JWT, so
//! the processor is not on the path of any connection. Works on NATS Server 2.9.
//!
//! A user JWT is `base64url(header).base64url(claims).base64url(ed25519 signature)`
//! with the header `{"typ":"JWT","alg":"ed25519-nkey"}`; a `.creds` document is the
//! JWT and the user's NKey seed between fixed markers (the format `nsc` writes).

use data_encoding::BASE64URL_NOPAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

use crate::protocol::id::{LinkId, SessionId};
use crate::protocol::subjects;

/// Issues users of one account with its signing key.
pub struct Issuer {
    /// The account's identity public key (`A…`), which users are bound to.
    account: String,
    signing: KeyPair,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed.
        f.debug_struct("Issuer")
            .field("account", &self.account)
            .field("signing_key", &self.signing.public_key())
            .finish()
    }
}

/// Who holds a session's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Monitor,
    Dashboard,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Monitor => "monitor",
            Role::Dashboard => "dashboard",
        }
    }
}

/// The two credentials of one session, and the inbox prefix their holders must
/// use (it is the only one they may read): part of the create reply.
pub use crate::protocol::documents::Credentials as SessionCredentials;

/// Why credentials could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("not an account signing seed")]
    Seed(#[source] nkeys::error::Error),
    #[error("not an account public key (A…): {0}")]
    Account(String),
    #[error("cannot encode a seed")]
    Encode(#[source] nkeys::error::Error),
    #[error("cannot sign")]
    Sign(#[source] nkeys::error::Error),
    #[error("cannot write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, CredentialsError>;

impl Issuer {
    /// `account`: the account's public key; `signing_seed`: the seed (`SA…`) of one
    /// of its signing keys.
    pub fn new(account: &str, signing_seed: &str) -> Result<Self> {
        let signing = KeyPair::from_seed(signing_seed.trim()).map_err(CredentialsError::Seed)?;
        if !(account.starts_with('A') && KeyPair::from_public_key(account).is_ok()) {
            return Err(CredentialsError::Account(account.to_string()));
        }
        Ok(Issuer {
            account: account.to_string(),
            signing,
        })
    }

    /// A monitor may publish the session's setup, telemetry and field (as requests too:
    /// it reads replies under the session's inbox prefix) and ask the service's
    /// discovery info (the page's address); a dashboard may read
    /// the session's subjects and ask `sessions.get` and `sessions.laps`. Each may
    /// renew its own credentials while the session lives. Both expire at
    /// `expires` (Unix seconds).
    pub fn for_session(&self, id: &SessionId, expires: i64) -> Result<SessionCredentials> {
        Ok(SessionCredentials {
            monitor: self.for_role(id, Role::Monitor, expires)?,
            dashboard: self.for_role(id, Role::Dashboard, expires)?,
            inbox_prefix: inbox_prefix(id),
        })
    }

    /// One role's credentials for a session, as a `.creds` document.
    pub fn for_role(&self, id: &SessionId, role: Role, expires: i64) -> Result<String> {
        let inbox = format!("{}.>", inbox_prefix(id));
        let permissions = match role {
            Role::Monitor => {
                let publish = [
                    subjects::data(id, subjects::DataKind::Setup),
                    subjects::data(id, subjects::DataKind::Telemetry),
                    subjects::data(id, subjects::DataKind::Field),
                    subjects::renew_one(subjects::Endpoint::RenewMonitor, id),
                ];
                // And the service's discovery info, where the page's address is
                // (what the monitor prints); never mapped.
                let mut publish = publish.map(subjects::with_mapped).concat();
                publish.push(subjects::SERVICE_INFO.to_string());
                json!({
                    "pub": { "allow": publish },
                    "sub": { "allow": [inbox] },
                })
            }
            Role::Dashboard => {
                let mut publish = dashboard_requests(id);
                publish.extend(subjects::with_mapped(subjects::renew_one(
                    subjects::Endpoint::RenewDashboard,
                    id,
                )));
                json!({
                    "pub": { "allow": publish },
                    "sub": { "allow": [subjects::session_wildcard(id), inbox] },
                })
            }
        };
        self.user(
            &format!("{} {id}", role.as_str()),
            permissions,
            Some(expires),
        )
    }

    /// A team link's credentials (per-session mode): read the team's subjects
    /// (`team.<token>.>`: the pit wall's feed) and renew the link
    /// (`sessions.renew.link.<link>`), and nothing of any other team or
    /// session. With `car`, also that session's, as its dashboard reads it:
    /// what the car page opened from the tower holds. The processor gives `car`
    /// only for a session of `team`. The inbox prefix is the team's, so the
    /// page swaps credentials on one connection. Renewal is the link's own
    /// subject, so a withdrawn link cannot renew under another's name.
    pub fn for_team(
        &self,
        team: &str,
        car: Option<&SessionId>,
        link: &LinkId,
        expires: i64,
    ) -> Result<String> {
        let mut publish = vec![subjects::renew_link_one(link)];
        let mut subscribe = vec![
            subjects::team_wildcard(team),
            subjects::inbox_wildcard(&subjects::team_inbox_prefix(team)),
        ];
        if let Some(id) = car {
            publish.extend(dashboard_requests(id));
            subscribe.push(subjects::session_wildcard(id));
        }
        let name = match car {
            Some(id) => format!("team {} car {id} link {link}", subjects::team_token(team)),
            None => format!("team {} link {link}", subjects::team_token(team)),
        };
        self.user(
            &name,
            json!({ "pub": { "allow": publish }, "sub": { "allow": subscribe } }),
            Some(expires),
        )
    }

    /// A session link's credentials (`sessions share <id>`): what the
    /// session's dashboard reads, renewed on the link's own subject
    /// (`sessions.renew.link.<link>`) rather than the session's, so that
    /// withdrawing the link ends them.
    pub fn for_session_link(&self, id: &SessionId, link: &LinkId, expires: i64) -> Result<String> {
        let mut publish = dashboard_requests(id);
        publish.push(subjects::renew_link_one(link));
        let inbox = subjects::inbox_wildcard(&inbox_prefix(id));
        self.user(
            &format!("dashboard {id} link {link}"),
            json!({
                "pub": { "allow": publish },
                "sub": { "allow": [subjects::session_wildcard(id), inbox] },
            }),
            Some(expires),
        )
    }

    /// A new user with `permissions` (`{"pub": …, "sub": …}`), as a `.creds` document.
    pub fn user(&self, name: &str, permissions: Value, expires: Option<i64>) -> Result<String> {
        let user = KeyPair::new_user();
        let mut nats = json!({
            "issuer_account": self.account,
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        });
        if let (Some(nats), Some(permissions)) = (nats.as_object_mut(), permissions.as_object()) {
            nats.extend(permissions.clone());
        }
        let mut claims = claims(&self.signing, &user, name, nats);
        if let Some(exp) = expires {
            claims["exp"] = exp.into();
        }
        let jwt = encode(&claims, &self.signing)?;
        Ok(creds(&jwt, &seed_of(&user)?))
    }
}

/// A new operator-mode setup for one paddock deployment: an operator, a system
/// account, and paddock's account (JetStream enabled) with a signing key for the
/// processor to issue session credentials with; and the users paddock needs.
/// `paddock auth init` writes it out (see [`OperatorSetup::write`]).
pub struct OperatorSetup {
    operator: KeyPair,
    system: KeyPair,
    pub account: KeyPair,
    pub signing: KeyPair,
    /// Partitions the account's subject mappings split sessions into (1: none).
    pub partitions: u32,
    /// The JetStream domain of the track's broker, whose API `leaf.creds` lets
    /// the hub's mirrors reach (`paddock broker config --domain`).
    pub leaf_domain: String,
}

impl Default for OperatorSetup {
    fn default() -> Self {
        Self::new()
    }
}

impl OperatorSetup {
    pub fn new() -> Self {
        OperatorSetup {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
            signing: KeyPair::new_account(),
            partitions: 1,
            leaf_domain: "track".into(),
        }
    }

    pub fn issuer(&self) -> Result<Issuer> {
        Issuer::new(&self.account.public_key(), &seed_of(&self.signing)?)
    }

    /// The nats-server configuration that trusts this operator and preloads both
    /// accounts (a memory resolver: accounts change only with this file).
    pub fn server_config(&self) -> Result<String> {
        let unlimited = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        let mut with_jetstream = unlimited.clone();
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            with_jetstream[key] = (-1).into();
        }
        // The operator signs itself and both accounts.
        let sign = |subject: &KeyPair, name: &str, nats: Value| {
            encode(&claims(&self.operator, subject, name, nats), &self.operator)
        };
        let operator = sign(
            &self.operator,
            "paddock operator",
            json!({"type": "operator", "version": 2, "system_account": self.system.public_key()}),
        )?;
        let system = sign(
            &self.system,
            "SYS",
            json!({"limits": unlimited, "type": "account", "version": 2}),
        )?;
        let mut account = json!({
            "limits": with_jetstream,
            "signing_keys": [self.signing.public_key()],
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        });
        // Partitioned ownership: the account's mappings, as a nats.conf's
        // `mappings` block would hold them (one destination, all the weight).
        if self.partitions > 1 {
            account["mappings"] = subjects::mappings(self.partitions)
                .into_iter()
                .map(|(from, to)| (from, json!([{"subject": to, "weight": 100}])))
                .collect();
        }
        let account = sign(&self.account, "paddock", account)?;
        Ok(format!(
            "# Written by `paddock auth init`: trust paddock's operator, preload its\n\
             # accounts. Include it from the server's configuration.\n\
             operator: \"{operator}\"\n\
             system_account: {sys}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: \"{system}\"\n  {acc}: \"{account}\"\n}}\n",
            sys = self.system.public_key(),
            acc = self.account.public_key(),
        ))
    }

    /// Writes into `dir`: `nats-operator.conf` (for the broker), `issuer.account`
    /// and `issuer.seed` (for the processor's `--issuer-*`), and one `.creds` per
    /// standing user: `processor` (unrestricted in the account), `ops` (the ops
    /// role), `creator` (may only create sessions: what a team's tool holds to get
    /// each session's credentials). Seeds are written readable by the owner only.
    pub fn write(&self, dir: &std::path::Path) -> Result<()> {
        let failed = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| CredentialsError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(failed(dir))?;
        let issuer = self.issuer()?;
        let files = [
            ("nats-operator.conf", self.server_config()?),
            // nats-server resolves `include` relative to the including file, so
            // the ready-made broker configuration sits beside what it includes.
            (
                "nats-server.conf",
                "# A broker for paddock's per-session access: nats-server -c <this file>.\n\
                 # Add cluster and websocket settings here; paths in `include`\n\
                 # are relative to this file.\n\
                 include ./nats-operator.conf\n\
                 jetstream: enabled\n\
                 # Loopback only: the drivers' monitors and the engineers' dashboards on\n\
                 # other machines cannot reach it. To open it to the network (a pit-wall\n\
                 # laptop), set host to 0.0.0.0, with TLS off a LAN you trust\n\
                 # (docs/SECURITY.md).\n\
                 host: 127.0.0.1\n"
                    .to_string(),
            ),
            ("issuer.account", format!("{}\n", self.account.public_key())),
            ("issuer.seed", seed_of(&self.signing)?),
            (
                "processor.creds",
                issuer.user("processor", json!({}), None)?,
            ),
            ("ops.creds", issuer.user("ops", ops_permissions(), None)?),
            (
                "creator.creds",
                issuer.user("creator", creator_permissions(), None)?,
            ),
            (
                "leaf.creds",
                issuer.user("leaf", leaf_permissions(&self.leaf_domain), None)?,
            ),
        ];
        for (name, content) in files {
            let path = dir.join(name);
            // The broker's configuration and the account's public key hold no
            // secret (JWTs are public), and the broker may run as another user.
            let written = if name.ends_with(".conf") || name.ends_with(".account") {
                std::fs::write(&path, &content)
            } else {
                write_private(&path, &content)
            };
            written.map_err(failed(&path))?;
        }
        Ok(())
    }
}

/// What a session's page asks of the processor: its snapshot, laps and stints,
/// each in both forms a partition mapping may give it (`subjects::with_mapped`).
/// A session's dashboard and a car page opened from a team link hold these.
fn dashboard_requests(id: &SessionId) -> Vec<String> {
    [
        subjects::get_one(id),
        subjects::laps_one(id),
        subjects::stints_one(id),
        // Its own laps' traces and comparisons (against another session's
        // lap: refused unless that is its own, processor.rs).
        subjects::trace_one(id),
        subjects::compare_one(id),
    ]
    .map(subjects::with_mapped)
    .concat()
}

/// The ops role of deploy/security/roles.conf, as JWT permissions.
fn ops_permissions() -> Value {
    use subjects::{Endpoint, control};
    json!({
        "pub": { "allow": [
            Endpoint::Get.subject(), control(subjects::GET_ONE),
            // As a partitioning broker maps them (`subjects::with_mapped`).
            control(&format!("{}.*", subjects::GET_ONE)),
            Endpoint::Laps.subject(), control(subjects::LAPS_ONE),
            control(&format!("{}.*", subjects::LAPS_ONE)),
            Endpoint::Stints.subject(), control(subjects::STINTS_ONE),
            control(&format!("{}.*", subjects::STINTS_ONE)),
            Endpoint::Trace.subject(), control(subjects::TRACE_ONE),
            control(&format!("{}.*", subjects::TRACE_ONE)),
            Endpoint::Compare.subject(), control(subjects::COMPARE_ONE),
            control(&format!("{}.*", subjects::COMPARE_ONE)),
            Endpoint::List.subject(), Endpoint::Stats.subject(),
            control("archive.>"), Endpoint::Delete.subject(), Endpoint::Label.subject(),
            // Team links (`sessions share --team`), session links (`sessions
            // share <id>`), listing and withdrawing them.
            Endpoint::Team.subject(), control(subjects::TEAM_ONE),
            Endpoint::Share.subject(), Endpoint::Links.subject(), Endpoint::Revoke.subject(),
            subjects::ALL_DISCOVERY,
            // Fresh credentials for a live session: share links, a monitor's again.
            control("renew.>"),
        ] },
        "sub": { "allow": [
            subjects::ALL_SESSIONS, subjects::ALL_SERVICE_EVENTS, subjects::ALL_TEAM_TOWERS,
            subjects::inbox_wildcard(&subjects::inbox_prefix(&"ops")),
        ] },
    })
}

/// What a track's broker may exchange with the hub over the leaf link
/// (`paddock broker config --creds leaf.creds`), from the hub's side: what it
/// may publish goes track → hub, what it may subscribe to comes hub → track.
/// The link binds paddock's account alone, so nothing of another account
/// crosses; within it, neither side's JetStream can be used from the other but
/// for what the hub's mirrors of the track's domain need, and the track cannot
/// ask the hub's `sessions` service.
pub fn leaf_permissions(domain: &str) -> Value {
    // Track → hub: live data, lifecycle and towers for home, the processors'
    // answers to home's requests under any inbox (a session link's is
    // `_INBOX_<id>`, which no wildcard names apart: a leaf connection carries
    // no `allow_responses`, nats-server#2949), and the mirrors' records
    // (`$JS.M.>` deliveries, `$JSC.R.>` answers to their consumer requests).
    // Denied: every domain's JetStream API and its buckets and object stores,
    // the system's subjects, and the service's requests.
    let mut deny = vec![
        "$JS.API.>".to_string(),
        "$JS.*.API.>".into(),
        "$KV.>".into(),
        "$O.>".into(),
        "$SYS.>".into(),
        subjects::ALL_DISCOVERY.into(),
        format!("{}.partition.>", subjects::CONTROL_PREFIX),
    ];
    for endpoint in subjects::Endpoint::ALL {
        deny.push(endpoint.subject());
        deny.push(format!("{}.>", endpoint.subject()));
    }
    json!({
        "pub": { "allow": [">"], "deny": deny },
        // Hub → track: home's requests to the track's processors and their
        // discovery, the mirrors' requests to the track's JetStream API (that
        // domain's only) and their flow control.
        "sub": { "allow": [
            format!("{}.>", subjects::CONTROL_PREFIX), subjects::ALL_DISCOVERY,
            format!("{}.>", subjects::js_domain_api(domain)), "$JS.FC.>",
        ] },
    })
}

/// Create sessions (and so receive their credentials), nothing else.
fn creator_permissions() -> Value {
    json!({
        "pub": { "allow": [subjects::Endpoint::Create.subject()] },
        "sub": { "allow": [subjects::inbox_wildcard(&subjects::inbox_prefix(&"creator"))] },
    })
}

/// Writes a file only its owner may read (seeds, credentials): mode 0600 on
/// Unix. On Windows a new file takes its directory's access list, which for
/// the user's profile (where a driver keeps a monitor's credentials) is the
/// user's own.
pub fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())
}

/// The inbox prefix of one session's credentials.
pub fn inbox_prefix(id: &SessionId) -> String {
    subjects::inbox_prefix(id)
}

/// The claims every NATS JWT carries: issued now by `issuer`, about `subject`,
/// with the type-specific `nats` part.
fn claims(issuer: &KeyPair, subject: &KeyPair, name: &str, nats: Value) -> Value {
    json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject.public_key(),
        "nats": nats,
    })
}

fn seed_of(key: &KeyPair) -> Result<String> {
    key.seed().map_err(CredentialsError::Encode)
}

/// Signs `claims` as a NATS JWT with `key`.
pub fn encode(claims: &Value, key: &KeyPair) -> Result<String> {
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let input = format!("{header}.{body}");
    let signature = key.sign(input.as_bytes()).map_err(CredentialsError::Sign)?;
    Ok(format!("{input}.{}", BASE64URL_NOPAD.encode(&signature)))
}

/// A `.creds` document, as `nsc` writes it and NATS clients read it.
pub fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_of(creds: &str) -> Value {
        let jwt = creds.lines().nth(1).unwrap();
        let body = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&BASE64URL_NOPAD.decode(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn session_credentials_name_one_session_and_verify() {
        let account = KeyPair::new_account();
        let signing = KeyPair::new_account();
        let issuer = Issuer::new(&account.public_key(), &signing.seed().unwrap()).unwrap();
        let id = SessionId::new_v4();
        let creds = issuer.for_session(&id, 4_000_000_000).unwrap();
        let monitor = claims_of(&creds.monitor);
        assert_eq!(monitor["iss"], signing.public_key());
        assert_eq!(monitor["nats"]["issuer_account"], account.public_key());
        assert_eq!(monitor["nats"]["type"], "user");
        assert_eq!(monitor["exp"], 4_000_000_000i64);
        assert_eq!(
            monitor["nats"]["pub"]["allow"],
            json!([
                format!("session.{id}.setup"),
                format!("session.{id}.setup.*"),
                format!("session.{id}.telemetry"),
                format!("session.{id}.telemetry.*"),
                format!("session.{id}.field"),
                format!("session.{id}.field.*"),
                format!("sessions.renew.monitor.{id}"),
                format!("sessions.renew.monitor.{id}.*"),
                "$SRV.INFO.sessions".to_string()
            ])
        );
        let dashboard = claims_of(&creds.dashboard);
        assert_eq!(
            dashboard["nats"]["pub"]["allow"],
            json!([
                format!("sessions.get.{id}"),
                format!("sessions.get.{id}.*"),
                format!("sessions.laps.{id}"),
                format!("sessions.laps.{id}.*"),
                format!("sessions.stints.{id}"),
                format!("sessions.stints.{id}.*"),
                format!("sessions.trace.{id}"),
                format!("sessions.trace.{id}.*"),
                format!("sessions.compare.{id}"),
                format!("sessions.compare.{id}.*"),
                format!("sessions.renew.dashboard.{id}"),
                format!("sessions.renew.dashboard.{id}.*")
            ])
        );
        assert_eq!(
            dashboard["nats"]["sub"]["allow"],
            json!([format!("session.{id}.>"), format!("_INBOX_{id}.>")])
        );
        // The signature verifies with the signing key's public half.
        let jwt = creds.dashboard.lines().nth(1).unwrap();
        let (input, signature) = jwt.rsplit_once('.').unwrap();
        let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).unwrap();
        KeyPair::from_public_key(&signing.public_key())
            .unwrap()
            .verify(input.as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn team_credentials_name_one_team_and_one_car_at_most() {
        let account = KeyPair::new_account();
        let signing = KeyPair::new_account();
        let issuer = Issuer::new(&account.public_key(), &signing.seed().unwrap()).unwrap();
        let link = LinkId::parse("0123456789abcdef").unwrap();
        let team = claims_of(
            &issuer
                .for_team("Red Bull", None, &link, 4_000_000_000)
                .unwrap(),
        );
        assert_eq!(
            team["nats"]["pub"]["allow"],
            json!(["sessions.renew.link.0123456789abcdef"])
        );
        assert_eq!(
            team["nats"]["sub"]["allow"],
            json!(["team.Red%20Bull.>", "_INBOX_team_Red%20Bull.>"])
        );
        let id = SessionId::new_v4();
        let car = claims_of(
            &issuer
                .for_team("Red Bull", Some(&id), &link, 4_000_000_000)
                .unwrap(),
        );
        assert_eq!(
            car["nats"]["pub"]["allow"],
            json!([
                "sessions.renew.link.0123456789abcdef".to_string(),
                format!("sessions.get.{id}"),
                format!("sessions.get.{id}.*"),
                format!("sessions.laps.{id}"),
                format!("sessions.laps.{id}.*"),
                format!("sessions.stints.{id}"),
                format!("sessions.stints.{id}.*"),
                format!("sessions.trace.{id}"),
                format!("sessions.trace.{id}.*"),
                format!("sessions.compare.{id}"),
                format!("sessions.compare.{id}.*"),
            ])
        );
        assert_eq!(
            car["nats"]["sub"]["allow"],
            json!([
                "team.Red%20Bull.>".to_string(),
                "_INBOX_team_Red%20Bull.>".to_string(),
                format!("session.{id}.>"),
            ])
        );
        assert_eq!(car["exp"], 4_000_000_000i64);
        // A session link: the dashboard's reads, renewed on the link alone.
        let shared = claims_of(&issuer.for_session_link(&id, &link, 4_000_000_000).unwrap());
        let publish = shared["nats"]["pub"]["allow"].as_array().unwrap();
        assert_eq!(
            publish.last().unwrap(),
            "sessions.renew.link.0123456789abcdef"
        );
        assert!(
            !publish
                .iter()
                .any(|s| s.as_str().unwrap().starts_with("sessions.renew.dashboard")),
            "{publish:?}"
        );
        assert_eq!(
            shared["nats"]["sub"]["allow"],
            json!([format!("session.{id}.>"), format!("_INBOX_{id}.>")])
        );
    }

    #[test]
    fn a_bad_key_is_refused_up_front() {
        assert!(Issuer::new("not-a-key", "SAxxxx").is_err());
        let signing = KeyPair::new_account().seed().unwrap();
        assert!(Issuer::new(&KeyPair::new_user().public_key(), &signing).is_err());
    }

    #[test]
    fn the_leaf_carries_paddock_and_only_the_tracks_jetstream() {
        let p = leaf_permissions("le-mans");
        let denied: Vec<&str> = p["pub"]["deny"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // The track reaches neither the hub's JetStream nor its buckets, nor
        // asks the hub's service.
        for subject in [
            "$JS.*.API.>",
            "$JS.API.>",
            "$KV.>",
            "sessions.get",
            "sessions.get.>",
        ] {
            assert!(
                denied.contains(&subject),
                "{subject} not denied: {denied:?}"
            );
        }
        assert!(!denied.iter().any(|d| d.starts_with("sessions.events")));
        let pulled = p["sub"]["allow"].as_array().unwrap();
        assert!(pulled.contains(&json!("$JS.le-mans.API.>")), "{pulled:?}");
        assert!(!pulled.contains(&json!("$JS.API.>")), "{pulled:?}");
    }
}
