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

use crate::id::SessionId;
use crate::subjects;

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

/// The two credentials of one session, and the inbox prefix their holders must
/// use (it is the only one they may read).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionCredentials {
    pub monitor: String,
    pub dashboard: String,
    pub inbox_prefix: String,
}

impl Issuer {
    /// `account`: the account's public key; `signing_seed`: the seed (`SA…`) of one
    /// of its signing keys.
    pub fn new(account: &str, signing_seed: &str) -> anyhow::Result<Self> {
        let signing = KeyPair::from_seed(signing_seed.trim())
            .map_err(|e| anyhow::anyhow!("not an account signing seed: {e}"))?;
        anyhow::ensure!(
            account.starts_with('A') && KeyPair::from_public_key(account).is_ok(),
            "not an account public key (A…): {account}"
        );
        Ok(Issuer {
            account: account.to_string(),
            signing,
        })
    }

    /// A monitor may publish the session's setup and telemetry (as requests too:
    /// it reads replies under the session's inbox prefix); a dashboard may read
    /// the session's subjects and ask `sessions.get`. Both expire with `expires`
    /// (Unix seconds), if given.
    pub fn for_session(
        &self,
        id: &SessionId,
        expires: Option<i64>,
    ) -> anyhow::Result<SessionCredentials> {
        let inbox_prefix = inbox_prefix(id);
        let inbox = format!("{inbox_prefix}.>");
        let monitor = self.user(
            &format!("monitor {id}"),
            json!({
                "pub": { "allow": [
                    subjects::data(id, subjects::DataKind::Setup),
                    subjects::data(id, subjects::DataKind::Telemetry),
                ] },
                "sub": { "allow": [inbox] },
            }),
            expires,
        )?;
        let dashboard = self.user(
            &format!("dashboard {id}"),
            json!({
                "pub": { "allow": [subjects::get_one(id)] },
                "sub": { "allow": [subjects::session_wildcard(id), inbox] },
            }),
            expires,
        )?;
        Ok(SessionCredentials {
            monitor,
            dashboard,
            inbox_prefix,
        })
    }

    /// A new user with `permissions` (`{"pub": …, "sub": …}`), as a `.creds` document.
    pub fn user(
        &self,
        name: &str,
        permissions: Value,
        expires: Option<i64>,
    ) -> anyhow::Result<String> {
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
        let mut claims = json!({
            "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
            "iat": chrono::Utc::now().timestamp(),
            "iss": self.signing.public_key(),
            "name": name,
            "sub": user.public_key(),
            "nats": nats,
        });
        if let Some(exp) = expires {
            claims["exp"] = exp.into();
        }
        let jwt = encode(&claims, &self.signing)?;
        let seed = user
            .seed()
            .map_err(|e| anyhow::anyhow!("cannot encode a user seed: {e}"))?;
        Ok(creds(&jwt, &seed))
    }
}

/// The inbox prefix of one session's credentials.
pub fn inbox_prefix(id: &SessionId) -> String {
    format!("_INBOX_{id}")
}

/// Signs `claims` as a NATS JWT with `key`.
pub fn encode(claims: &Value, key: &KeyPair) -> anyhow::Result<String> {
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let input = format!("{header}.{body}");
    let signature = key
        .sign(input.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
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
        let creds = issuer.for_session(&id, Some(4_000_000_000)).unwrap();
        let monitor = claims_of(&creds.monitor);
        assert_eq!(monitor["iss"], signing.public_key());
        assert_eq!(monitor["nats"]["issuer_account"], account.public_key());
        assert_eq!(monitor["nats"]["type"], "user");
        assert_eq!(monitor["exp"], 4_000_000_000i64);
        assert_eq!(
            monitor["nats"]["pub"]["allow"],
            json!([
                format!("session.{id}.setup"),
                format!("session.{id}.telemetry")
            ])
        );
        let dashboard = claims_of(&creds.dashboard);
        assert_eq!(
            dashboard["nats"]["pub"]["allow"],
            json!([format!("sessions.get.{id}")])
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
    fn a_bad_key_is_refused_up_front() {
        assert!(Issuer::new("not-a-key", "SAxxxx").is_err());
        let signing = KeyPair::new_account().seed().unwrap();
        assert!(Issuer::new(&KeyPair::new_user().public_key(), &signing).is_err());
    }
}
