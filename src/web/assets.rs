//! The page's files, embedded at build time: a dashboard opened at a pit wall
//! works offline, and the binary is the whole deployment.
//!
//! `page/` holds our own files; `vendor/` the pinned third-party builds with their
//! licences and the script that rebuilt them (`vendor/build.sh`; Node is needed
//! only to rebuild, never to build paddock or run CI).

/// The one HTML page: the listing at `/`, one session at `/session/<id>`.
pub const INDEX_HTML: &str = include_str!("page/index.html");

/// Files under `/assets/`: name, content type, contents.
const FILES: &[(&str, &str, &[u8])] = &[
    ("app.js", JS, include_bytes!("page/app.js")),
    ("view.js", JS, include_bytes!("page/view.js")),
    ("style.css", CSS, include_bytes!("page/style.css")),
    ("nats.js", JS, include_bytes!("vendor/nats.js")),
    ("uplot.js", JS, include_bytes!("vendor/uplot.js")),
    ("uplot.css", CSS, include_bytes!("vendor/uplot.css")),
    ("qrcode.js", JS, include_bytes!("vendor/qrcode.js")),
    ("icon.svg", SVG, ICON),
];

/// The page's icon (a chequered flag), also served at `/favicon.ico`, which
/// browsers ask for on their own.
pub const ICON: &[u8] = include_bytes!("page/icon.svg");
pub const SVG: &str = "image/svg+xml";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// An asset's content type and contents.
pub fn get(name: &str) -> Option<(&'static str, &'static [u8])> {
    FILES
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|(_, content_type, body)| (*content_type, *body))
}
