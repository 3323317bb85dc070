//! The public dashboard: a static page and its assets, embedded in the binary, that
//! read the public JSON API from the browser.
//!
//! The sources live in `web/`; `node web/build.js` writes `crates/api/assets/`
//! (committed, so `cargo build` needs no npm). Asset names carry a content hash and
//! are served as immutable; the page itself is revalidated by ETag. Each file is
//! stored gzipped as well, and the gzipped bytes are sent to clients that accept
//! them. Every answer carries a Content-Security-Policy that allows no inline script
//! and no other origin.
//!
//! The admin interface at `/admin` is a second page built the same way; it talks to
//! the admin API only, with a cookie session ([`session`]).

pub mod session;

use axum::extract::{Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::state::ApiState;

/// One embedded file, as listed by the generated `assets/assets.rs`.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    /// Quoted strong ETag (a prefix of the SHA-256 of `body`).
    pub etag: &'static str,
    /// The name carries a content hash: a client may keep it forever.
    pub immutable: bool,
    pub body: &'static [u8],
    pub gzip: &'static [u8],
}

/// Every embedded file of the dashboard.
pub static ASSETS: &[Asset] = include!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/assets.rs"));

/// `script-src 'self'` without `'unsafe-inline'`: an injected `<script>` cannot run.
/// uPlot sets styles through the CSSOM, which `style-src 'self'` allows.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page names the current hashed assets, so it must be revalidated every time.
const CACHE_REVALIDATE: &str = "no-cache";

/// Routes of the dashboard, merged into the public router. They are not part of
/// the JSON API, so they are not in `public_routes` nor in the OpenAPI document.
pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route("/admin", get(admin_page))
        .route("/validations/{id}", get(validation_page))
        .route("/assets/{name}", get(asset))
        .route("/dashboard.json", get(settings))
}

/// The embedded file called `name`, if any.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

async fn index(headers: HeaderMap) -> Response {
    page(&headers)
}

/// The same page: its script reads the id from the location and renders that
/// validation, so one shell serves every view and a link to a validation is stable.
async fn validation_page(headers: HeaderMap, Path(_id): Path<String>) -> Response {
    page(&headers)
}

async fn admin_page(headers: HeaderMap) -> Response {
    named_page("admin.html", &headers)
}

fn page(headers: &HeaderMap) -> Response {
    named_page("index.html", headers)
}

fn named_page(name: &str, headers: &HeaderMap) -> Response {
    match find(name) {
        Some(a) => serve_asset(a, headers),
        // The generated table always lists the pages; a build without one is broken.
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn asset(headers: HeaderMap, uri: axum::http::Uri, Path(name): Path<String>) -> Response {
    match find(&name) {
        Some(a) if a.immutable => serve_asset(a, &headers),
        _ => crate::handlers::fallback(uri).await.into_response(),
    }
}

#[derive(serde::Serialize)]
struct Settings {
    /// Link for a reserve address: `{address}` is replaced, else the address is appended.
    explorer_url: Option<String>,
}

async fn settings(State(state): State<ApiState>) -> Response {
    let mut res = Json(Settings {
        explorer_url: state.explorer_url.clone(),
    })
    .into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_REVALIDATE),
    );
    res
}

/// Whether `accept-encoding` allows gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
}

fn serve_asset(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let gzip = accepts_gzip(headers);
    let status = if not_modified(headers, asset.etag) {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let body: &'static [u8] = match (status, gzip) {
        (StatusCode::NOT_MODIFIED, _) => &[],
        (_, true) => asset.gzip,
        (_, false) => asset.body,
    };
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if gzip && status == StatusCode::OK {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if asset.immutable {
            CACHE_IMMUTABLE
        } else {
            CACHE_REVALIDATE
        }),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "br, gzip;q=0.8"
        )])));
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "*")])));
        assert!(!accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip;q=0, br"
        )])));
        assert!(!accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "identity"
        )])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn etag_matching() {
        let etag = "\"abc\"";
        assert!(not_modified(
            &headers(&[(header::IF_NONE_MATCH, "\"x\", W/\"abc\"")]),
            etag
        ));
        assert!(!not_modified(
            &headers(&[(header::IF_NONE_MATCH, "\"x\"")]),
            etag
        ));
    }

    #[test]
    fn the_pages_name_only_embedded_assets() {
        for name in ["index.html", "admin.html"] {
            let page = std::str::from_utf8(find(name).expect("page").body).expect("utf-8");
            let mut named = 0;
            for part in page.split("/assets/").skip(1) {
                let asset = part.split('"').next().unwrap_or_default();
                let a = find(asset).unwrap_or_else(|| panic!("{asset} is not embedded"));
                assert!(a.immutable, "{asset} has a hashed name");
                named += 1;
            }
            assert_eq!(named, 2, "{name}: one script and one stylesheet");
            // No inline script: every <script> has a src.
            assert_eq!(
                page.matches("<script").count(),
                page.matches("<script src=").count()
            );
        }
    }
}
