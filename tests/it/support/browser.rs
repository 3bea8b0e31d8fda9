//! A real browser for the dashboard tests: Debian's `chromium`, driven through
//! `chromedriver` (WebDriver) with fantoccini. One driver and one headless browser
//! per test, on a free port, stopped on drop.
//!
//! A browser test starts with [`Chromium::find`]: without chromium or
//! chromedriver (on PATH, or at `CHROME_BIN` / `CHROMEDRIVER`) the browser tests
//! are left out, with one line saying how to install them, or fail under
//! `CI=true` ([`super::needs`]).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::broker::free_port;
use super::needs::{Group, on_path};

static BROWSER_TESTS: Group = Group::new(
    "browser tests",
    "sudo apt-get install chromium chromium-driver",
);

/// A phone (a common Android size) and a laptop.
pub const PHONE: (u32, u32) = (412, 915);
pub const DESKTOP: (u32, u32) = (1400, 1000);

pub struct Browser {
    pub client: Client,
    _driver: Driver,
}

/// chromedriver, in a process group of its own with the browsers it starts: the
/// group is killed on drop, so no headless chromium outlives a test, even one
/// that fails while starting.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = self.0.id() as i32;
        // SAFETY: kill(2) on a process group this test created.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn find(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    match std::env::var_os(env) {
        Some(path) => Some(PathBuf::from(path)),
        None => on_path(candidates),
    }
}

/// The programs a browser test drives: found before the test starts anything.
pub struct Chromium {
    driver: PathBuf,
    chrome: PathBuf,
}

impl Chromium {
    /// chromium and chromedriver, or `None` when they are not both there and
    /// the test is to return, left out (under `CI=true` it fails here).
    pub fn find() -> Option<Chromium> {
        let driver = find("CHROMEDRIVER", &["chromedriver"]);
        let chrome = find(
            "CHROME_BIN",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        match (chrome, driver) {
            (Some(chrome), Some(driver)) => Some(Chromium { driver, chrome }),
            (chrome, driver) => {
                let missing: Vec<&str> = [(chrome, "chromium"), (driver, "chromedriver")]
                    .into_iter()
                    .filter(|(found, _)| found.is_none())
                    .map(|(_, name)| name)
                    .collect();
                BROWSER_TESTS.left_out(&missing.join("/"));
                None
            }
        }
    }

    /// A headless chromium at `size`.
    pub async fn start(&self, size: (u32, u32)) -> Browser {
        Browser::start(self, size).await
    }
}

impl Browser {
    async fn start(programs: &Chromium, size: (u32, u32)) -> Self {
        let (driver_bin, chrome_bin) = (&programs.driver, &programs.chrome);
        let port = free_port();
        let driver = Driver(
            Command::new(driver_bin)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display())),
        );
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chrome_bin,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    format!("--window-size={},{}", size.0, size.1),
                ],
            }),
        );
        // The page's console, for `console_errors`.
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver at {url} did not start a browser: {e}"),
            }
        };
        let browser = Browser {
            client,
            _driver: driver,
        };
        browser.resize(size).await;
        browser
    }

    /// Sends `signal` to the browser and its driver (their process group):
    /// SIGSTOP freezes the page as a laptop's lid would, SIGCONT wakes it.
    pub fn signal(&self, signal: i32) {
        let group = self._driver.0.id() as i32;
        // SAFETY: kill(2) on a process group this test created.
        let done = unsafe { libc::kill(-group, signal) };
        assert_eq!(done, 0, "cannot signal the browser");
    }

    /// Makes the page's viewport `size` (the window's outer size is larger).
    pub async fn resize(&self, size: (u32, u32)) {
        self.client
            .set_window_size(size.0, size.1)
            .await
            .expect("resize");
        // Grow the window by what its chrome takes, so the viewport is `size`.
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .expect("inner size");
        let (w, h) = (
            inner[0].as_u64().unwrap_or(u64::from(size.0)) as u32,
            inner[1].as_u64().unwrap_or(u64::from(size.1)) as u32,
        );
        self.client
            .set_window_size(2 * size.0 - w.min(size.0), 2 * size.1 - h.min(size.1))
            .await
            .expect("resize");
    }

    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("open the page");
    }

    /// The text of the first element matching `css`, "" when there is none.
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Whether the element is displayed.
    pub async fn shown(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => el.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// A value computed in the page.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Waits until `check` holds for the text of `css`; fails with what it saw.
    pub async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text(css).await;
            if check(&text) {
                return text;
            }
            if Instant::now() > deadline {
                let problem = self.text("#problem").await;
                let link = self.text("#link").await;
                panic!("{what}: {css} shows {text:?} (link: {link:?}, problem: {problem:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `css` is displayed (or hidden, with `shown` false).
    pub async fn wait_shown(&self, css: &str, shown: bool, within: Duration) {
        let deadline = Instant::now() + within;
        while self.shown(css).await != shown {
            assert!(
                Instant::now() < deadline,
                "{css} still {} after {within:?}",
                if shown { "hidden" } else { "shown" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the viewport into `$PADDOCK_SCREENSHOTS` (else target/screenshots).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = std::env::var_os("PADDOCK_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
            });
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// A Chrome DevTools Protocol command, through chromedriver's
/// `POST /session/<id>/goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: String,
    params: serde_json::Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params}).to_string();
        (http::Method::POST, Some(body))
    }
}

/// The browser's log entries since the last call, through chromedriver's
/// `POST /session/<id>/se/log` (with `goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

impl Browser {
    /// The errors the page's console logged since the last call: script errors,
    /// `console.error`, and failed loads (a 404 for an icon, say), as Chromium
    /// reports them in its console.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or_else(|e| panic!("the browser's log: {e}"));
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
            // The broker's, not the page's: nats-server before 2.10.24 answers a
            // browser's close (the page reconnecting with renewed credentials)
            // with status 1005, which RFC 6455 reserves (nats-io/nats-server#6259,
            // fixed by #6260); Debian 12's 2.9 does.
            .filter(|message| {
                !message.contains("broken close frame containing a reserved status code")
            })
            .collect()
    }

    /// Runs a DevTools command (`Emulation.setCPUThrottlingRate`,
    /// `Performance.getMetrics`, …) on the page and returns its result.
    pub async fn cdp(&self, cmd: &str, params: serde_json::Value) -> serde_json::Value {
        self.client
            .issue_cmd(Cdp {
                cmd: cmd.to_string(),
                params,
            })
            .await
            .unwrap_or_else(|e| panic!("DevTools {cmd}: {e}"))
    }

    /// Ends the browser session (call at the end of a test; drop kills the rest).
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.clone().close()).await;
    }
}
