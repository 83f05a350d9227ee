//! The dashboard's files, embedded in the binary (no CDN, no build step).

/// `GET /`.
pub(crate) const INDEX_HTML: &str = include_str!("../dashboard/index.html");
/// `GET /dashboard.js`.
pub(crate) const DASHBOARD_JS: &str = include_str!("../dashboard/dashboard.js");
/// `GET /dashboard.css`.
pub(crate) const DASHBOARD_CSS: &str = include_str!("../dashboard/dashboard.css");
