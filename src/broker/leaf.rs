//! The two brokers of "at the track and at home" (docs/ARCHITECTURE.md): the
//! track's broker, a NATS leaf node with a JetStream domain of its own, dials
//! the hub (it needs no inbound port); the hub holds a mirrored copy of what
//! the track records. What `paddock broker config --leaf-of …` writes.
//!
//! Pure text: the tests start both brokers from the same function the command
//! uses, with loopback ports.

use std::path::PathBuf;

/// One track and its hub.
#[derive(Debug, Clone)]
pub struct LeafPlan {
    /// The hub's leaf listener as the track dials it (`nats-leaf://hub:7422`).
    pub hub_url: String,
    /// The track's JetStream domain: the hub reaches its JetStream API as
    /// `$JS.<domain>.API` (`paddock hub --mirror-of <domain>`).
    pub domain: String,
    /// The hub's own JetStream domain (its mirrors live there).
    pub hub_domain: String,
    /// The credentials the track's leaf connection presents to the hub
    /// (`paddock auth init` writes `leaf.creds`): what may cross the link.
    pub creds: Option<PathBuf>,
    /// In operator mode: `nats-operator.conf` (both brokers trust the same
    /// operator), relative to the written files (nats-server resolves `include`
    /// from the including file's directory), and the paddock account the leaf
    /// connection binds.
    pub operator: Option<(PathBuf, String)>,
    /// The client port of each broker (the track's monitors and pit wall, the
    /// hub's engineers at home); -1: the broker picks one (tests).
    pub client_port: i32,
    /// The WebSocket port of each broker, for the dashboard page; -1: the broker picks.
    pub websocket_port: i32,
    /// The port the hub accepts leaf connections on.
    pub leaf_port: u16,
    /// Each broker's JetStream store.
    pub store_dir: PathBuf,
    /// With a `tls://` hub URL: the TLS the link runs on ([`LeafTls`]).
    pub tls: Option<LeafTls>,
}

/// TLS on the leaf link, for a hub the tracks dial as `tls://hub:7422`.
#[derive(Debug, Clone)]
pub struct LeafTls {
    /// The hub's certificate (its name as the tracks dial it) and key, PEM.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA the track checks the hub's certificate against (a private CA);
    /// `None`: the system's roots.
    pub ca: Option<PathBuf>,
}

/// Whether a hub URL asks for TLS (`tls://`): the hub's leaf listener then
/// requires it of every track.
pub fn wants_tls(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("tls://"))
}

/// The plan's TLS against its URL: a `tls://` hub needs its certificate and
/// key, and a certificate for a plain `nats-leaf://` link would not be used.
pub fn check_tls(url: &str, tls: Option<&LeafTls>) -> Result<(), String> {
    match (wants_tls(url), tls) {
        (true, None) => Err(format!(
            "{url} asks for TLS: give the hub's certificate and key \
             (--hub-tls-cert, --hub-tls-key)"
        )),
        (false, Some(_)) => Err(format!(
            "the hub's certificate is for a TLS link: dial it as tls://{} (not {url})",
            host_port(url)
        )),
        _ => Ok(()),
    }
}

/// A JetStream domain name: letters, digits, `-` and `_` (it becomes a subject
/// token, `$JS.<domain>.API`, and a part of stream names).
pub fn valid_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() || domain.len() > 32 {
        return Err(format!("a domain is 1 to 32 characters, not {domain:?}"));
    }
    if !domain
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "a domain is letters, digits, '-' and '_' only, not {domain:?}"
        ));
    }
    Ok(())
}

impl LeafPlan {
    /// The parts every broker of the pair shares: trust, ports, JetStream in
    /// its own domain.
    fn common(&self, domain: &str, role: &str) -> String {
        let mut text = format!("# paddock: the {role}'s broker (`paddock broker config`).\n");
        if let Some((operator, _)) = &self.operator {
            text.push_str(&format!(
                "# One operator for both brokers: credentials issued at the track work\n\
                 # at the hub with the same scope (docs/SECURITY.md).\ninclude \"{}\"\n",
                operator.display()
            ));
        }
        text.push_str(&format!(
            "port: {port}\n\
             # Largest message, as nats.conf says why.\n\
             max_payload: 1MB\n\
             jetstream {{\n  \
               # Its own domain: JetStream answers locally whether the link is up\n  \
               # or not, and is reachable from the other side as $JS.{domain}.API.\n  \
               domain: {domain}\n  \
               store_dir: \"{store}\"\n\
             }}\n\
             # The dashboard page's WebSocket listener. no_tls is for a LAN you\n\
             # trust or loopback; elsewhere give it tls {{}} (deploy/README.md).\n\
             websocket {{\n  port: {ws}\n  no_tls: true\n}}\n",
            port = self.client_port,
            store = self.store_dir.display(),
            ws = self.websocket_port,
        ));
        text
    }

    /// The track's broker: a leaf node of the hub. Monitors, the processor,
    /// the pit wall's pages and `watch` connect here; nothing of theirs waits
    /// on the hub.
    pub fn track_config(&self) -> String {
        let mut text = self.common(&self.domain, "track");
        let mut remote = format!("    url: \"{}\"\n", self.hub_url);
        if let Some(creds) = &self.creds {
            remote.push_str(&format!("    credentials: \"{}\"\n", creds.display()));
        }
        if let Some((_, account)) = &self.operator {
            remote.push_str(&format!("    account: {account}\n"));
        }
        // The hub's listener requires TLS (its first message says so) and the
        // track follows; this block only names a private CA to check the
        // hub's certificate against (else the system's roots).
        if let Some(ca) = self.tls.as_ref().and_then(|tls| tls.ca.as_ref()) {
            remote.push_str(&format!(
                "    tls {{\n      ca_file: \"{}\"\n    }}\n",
                ca.display()
            ));
        }
        text.push_str(
            "# A link that goes silent (no TCP close) is noticed within 30 s, not\n\
             # the default 4 minutes.\nping_interval: \"10s\"\nping_max: 3\n",
        );
        text.push_str(&format!(
            "# The uplink: dialled out (no inbound port at the track), redialled every\n\
             # second while it is down (the default; `reconnect` is an integer on 2.9\n\
             # and a duration later, so it is left out). What crosses it is what the credentials allow.\n\
             leafnodes {{\n  remotes = [\n  {{\n{remote}  }}\n  ]\n}}\n"
        ));
        text
    }

    /// The hub's broker: accepts the tracks' leaf connections. Engineers at
    /// home and `paddock hub --mirror-of <track domain>` connect here.
    pub fn hub_config(&self) -> String {
        let mut text = self.common(&self.hub_domain, "hub");
        text.push_str(&format!(
            "# Tracks dial in here (open this port to them). advertise: the address\n\
             # the tracks were given; otherwise the hub tells a track its own\n\
             # interfaces, which a circuit cannot reach (or which bypass a proxy or\n\
             # NAT in front), and the track would redial those.\n\
             leafnodes {{\n  port: {}\n  advertise: \"{}\"\n{}}}\n",
            self.leaf_port,
            host_port(&self.hub_url),
            self.tls.as_ref().map_or(String::new(), |tls| format!(
                "  # The tracks dial tls://: every leaf connection is TLS, with this\n  \
                 # certificate (its name as the tracks dial the hub).\n  \
                 tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n  }}\n",
                tls.cert.display(),
                tls.key.display()
            )),
        ));
        text
    }
}

/// `host:port` of a leaf URL (`nats-leaf://hub:7000/` → `hub:7000`; port 7422
/// when absent).
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.trim_end_matches('/');
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!(
        "{}:{}",
        rest.rsplit_once(':').map_or(rest, |(h, _)| h),
        leaf_port_of(url)
    )
}

/// The port at the end of a leaf URL (`nats-leaf://hub:7422` → 7422; 7422 when absent).
pub fn leaf_port_of(url: &str) -> u16 {
    url.rsplit_once(':')
        .and_then(|(_, port)| port.trim_end_matches('/').parse().ok())
        .unwrap_or(7422)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LeafPlan {
        LeafPlan {
            hub_url: "nats-leaf://hub.example:7422".into(),
            domain: "track".into(),
            hub_domain: "hub".into(),
            creds: Some("/etc/paddock/leaf.creds".into()),
            operator: None,
            client_port: 4222,
            websocket_port: 8080,
            leaf_port: 7422,
            store_dir: "/var/lib/nats-server".into(),
            tls: None,
        }
    }

    #[test]
    fn a_tls_hub_offers_its_certificate_and_the_track_dials_tls() {
        let plan = LeafPlan {
            hub_url: "tls://hub.example:7422".into(),
            tls: Some(LeafTls {
                cert: "/etc/paddock/hub.pem".into(),
                key: "/etc/paddock/hub-key.pem".into(),
                ca: Some("/etc/paddock/ca.pem".into()),
            }),
            ..plan()
        };
        let track = plan.track_config();
        let hub = plan.hub_config();
        assert!(track.contains("url: \"tls://hub.example:7422\""), "{track}");
        assert!(
            track.contains("ca_file: \"/etc/paddock/ca.pem\""),
            "{track}"
        );
        assert!(!track.contains("cert_file"), "{track}");
        let leafnodes = &hub[hub.find("leafnodes {").unwrap()..];
        assert!(
            leafnodes.contains("cert_file: \"/etc/paddock/hub.pem\""),
            "{hub}"
        );
        assert!(
            leafnodes.contains("key_file: \"/etc/paddock/hub-key.pem\""),
            "{hub}"
        );
        assert!(
            leafnodes.contains("advertise: \"hub.example:7422\""),
            "{hub}"
        );
        // Braces balance: the tls block sits inside leafnodes.
        assert_eq!(hub.matches('{').count(), hub.matches('}').count(), "{hub}");
        assert_eq!(
            track.matches('{').count(),
            track.matches('}').count(),
            "{track}"
        );
        // Without a private CA the track trusts the system's roots: no block.
        let public = LeafPlan {
            tls: Some(LeafTls {
                ca: None,
                ..plan.tls.clone().unwrap()
            }),
            ..plan.clone()
        };
        assert!(!public.track_config().contains("ca_file"));
    }

    #[test]
    fn tls_in_the_url_and_a_certificate_go_together() {
        let tls = LeafTls {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            ca: None,
        };
        assert!(wants_tls("tls://hub:7422"));
        assert!(wants_tls("TLS://hub"));
        assert!(!wants_tls("nats-leaf://hub:7422"));
        assert!(check_tls("tls://hub:7422", Some(&tls)).is_ok());
        assert!(check_tls("nats-leaf://hub:7422", None).is_ok());
        let missing = check_tls("tls://hub:7422", None).unwrap_err();
        assert!(missing.contains("--hub-tls-cert"), "{missing}");
        let unused = check_tls("nats-leaf://hub:7000", Some(&tls)).unwrap_err();
        assert!(unused.contains("tls://hub:7000"), "{unused}");
    }

    #[test]
    fn each_side_has_its_own_domain_and_only_the_track_dials() {
        let plan = plan();
        let track = plan.track_config();
        let hub = plan.hub_config();
        assert!(track.contains("domain: track"), "{track}");
        assert!(hub.contains("domain: hub"), "{hub}");
        assert!(track.contains("url: \"nats-leaf://hub.example:7422\""));
        assert!(track.contains("credentials: \"/etc/paddock/leaf.creds\""));
        assert!(!hub.contains("remotes"), "{hub}");
        assert!(hub.contains("port: 7422"), "{hub}");
        assert!(hub.contains("advertise: \"hub.example:7422\""), "{hub}");
    }

    #[test]
    fn domains_are_one_subject_token() {
        assert!(valid_domain("le-mans_2025").is_ok());
        assert!(valid_domain("a.b").is_err());
        assert!(valid_domain("").is_err());
        assert!(valid_domain("$JS").is_err());
    }

    #[test]
    fn the_leaf_port_is_read_from_the_url() {
        assert_eq!(leaf_port_of("nats-leaf://hub:7000"), 7000);
        assert_eq!(leaf_port_of("nats-leaf://hub"), 7422);
        assert_eq!(leaf_port_of("tls://hub:7423/"), 7423);
        assert_eq!(
            host_port("nats-leaf://hub.example:7000/"),
            "hub.example:7000"
        );
        assert_eq!(host_port("nats-leaf://hub.example"), "hub.example:7422");
        assert_eq!(host_port("tls://u:p@hub:7423"), "hub:7423");
    }
}
