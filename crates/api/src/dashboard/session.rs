//! Cookie sessions for the admin interface at `/admin`, on top of the admin API's
//! bearer tokens (which API clients keep using unchanged).
//!
//! A request opts in with the header `x-ubtc-session: cookie`; without it, cookies
//! are ignored, so a request forged by another site (which cannot set a custom header
//! without a CORS preflight this server never grants) never carries the session.
//! On top of that:
//! - `POST /v1/admin/login`, `/v1/admin/login/enrol` and `/v1/admin/refresh` answers
//!   (200) have their tokens moved
//!   into cookies: the access token (`Path=/v1`) and the refresh token
//!   (`Path=/v1/admin`) are `HttpOnly` (the page's script never sees them),
//!   `SameSite=Strict`, and `Secure` as `admin.cookie_secure` says (by default on,
//!   except when the server listens on loopback only). The client's `Host` header
//!   has no say: anyone can send `Host: localhost` through a proxy;
//! - a fresh CSRF token goes into a cookie the script can read, and every request
//!   that changes something must repeat it in `x-csrf-token` (double submit);
//! - other requests get `authorization: Bearer <access cookie>` added, and the admin
//!   API's own guard decides as for any token;
//! - logout clears the cookies whatever the API answered.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode};

pub const SESSION_HEADER: &str = "x-ubtc-session";
pub const CSRF_HEADER: &str = "x-csrf-token";
const ACCESS_COOKIE: &str = "ubtc_admin_access";
const REFRESH_COOKIE: &str = "ubtc_admin_refresh";
const CSRF_COOKIE: &str = "ubtc_admin_csrf";
/// Token answers are a few hundred bytes; anything bigger is not one.
const TOKEN_BODY_MAX_BYTES: usize = 64 * 1024;

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn set_cookie(
    res: &mut Response,
    name: &str,
    value: &str,
    path: &str,
    max_age_secs: i64,
    http_only: bool,
    secure: bool,
) {
    let mut c = format!("{name}={value}; Path={path}; Max-Age={max_age_secs}; SameSite=Strict");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn clear_cookies(res: &mut Response, secure: bool) {
    set_cookie(res, ACCESS_COOKIE, "", "/v1", 0, true, secure);
    set_cookie(res, REFRESH_COOKIE, "", "/v1/admin", 0, true, secure);
    set_cookie(res, CSRF_COOKIE, "", "/", 0, false, secure);
}

fn new_csrf_token() -> String {
    // Two v4 UUIDs: 244 random bits from the OS generator.
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Constant-time comparison: the CSRF token must not leak through timing.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn csrf_failed(message: &str) -> Response {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("csrf check failed: {message}"),
    )
    .into_response()
}

/// The layer (see the module documentation).
pub async fn cookie_session(
    State(admin): State<Option<std::sync::Arc<crate::admin::AdminAuth>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let opted_in = req
        .headers()
        .get(SESSION_HEADER)
        .is_some_and(|v| v.as_bytes() == b"cookie");
    if !opted_in {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    // Without accounts there is no login to put into cookies; keep the safe default.
    let secure = admin.as_ref().is_none_or(|a| a.cookie_secure);
    // Confirming an enrolment is a login too: it opens the account's first session.
    let login = path == "/v1/admin/login" || path == "/v1/admin/login/enrol";
    let refresh = path == "/v1/admin/refresh";
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);

    // Login has no session to protect yet (and the custom header already stops a
    // cross-site form); everything else that changes state repeats the CSRF token.
    if unsafe_method && !login {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        match cookie(req.headers(), CSRF_COOKIE) {
            Some(expected) if same(sent, expected) => {}
            Some(_) => return csrf_failed("x-csrf-token does not match the session"),
            None => return csrf_failed("no session cookie"),
        }
    }

    if refresh {
        let Some(token) = cookie(req.headers(), REFRESH_COOKIE) else {
            return ApiError::new(ErrorCode::Unauthorized, "no refresh cookie").into_response();
        };
        let body = serde_json::json!({ "refresh_token": token }).to_string();
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        req.headers_mut().remove(header::CONTENT_LENGTH);
        *req.body_mut() = Body::from(body);
    } else if !login && !req.headers().contains_key(header::AUTHORIZATION) {
        if let Some(token) = cookie(req.headers(), ACCESS_COOKIE) {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                req.headers_mut().insert(header::AUTHORIZATION, v);
            }
        }
    }

    let logout = path == "/v1/admin/logout";
    let res = next.run(req).await;
    if logout {
        let mut res = res;
        clear_cookies(&mut res, secure);
        return res;
    }
    if (login || refresh) && res.status() == StatusCode::OK {
        return into_cookies(res, secure).await;
    }
    if refresh && res.status() == StatusCode::UNAUTHORIZED {
        let mut res = res;
        clear_cookies(&mut res, secure);
        return res;
    }
    res
}

/// Moves the tokens of a login or refresh answer into cookies and strips them from
/// the body; the rest (username, role, lifetimes) stays for the page.
async fn into_cookies(res: Response, secure: bool) -> Response {
    let (mut parts, body) = res.into_parts();
    let bytes = match axum::body::to_bytes(body, TOKEN_BODY_MAX_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "token answer unreadable");
            return ApiError::new(ErrorCode::Internal, "internal error").into_response();
        }
    };
    let Ok(serde_json::Value::Object(mut json)) = serde_json::from_slice(&bytes) else {
        tracing::error!("token answer is not a JSON object");
        return ApiError::new(ErrorCode::Internal, "internal error").into_response();
    };
    let take = |json: &mut serde_json::Map<String, serde_json::Value>, k: &str| {
        json.remove(k)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let access = take(&mut json, "access_token");
    let refresh = take(&mut json, "refresh_token");
    let access_secs = json.get("expires_in").and_then(|v| v.as_i64()).unwrap_or(0);
    let refresh_secs = json
        .get("refresh_expires_in")
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut res = Response::from_parts(
        parts,
        Body::from(serde_json::Value::Object(json).to_string()),
    );
    // The access cookie outlives its token a little so an expired token reaches the
    // API, which answers `token_expired` and the page refreshes.
    set_cookie(
        &mut res,
        ACCESS_COOKIE,
        &access,
        "/v1",
        refresh_secs.max(access_secs),
        true,
        secure,
    );
    set_cookie(
        &mut res,
        REFRESH_COOKIE,
        &refresh,
        "/v1/admin",
        refresh_secs,
        true,
        secure,
    );
    set_cookie(
        &mut res,
        CSRF_COOKIE,
        &new_csrf_token(),
        "/",
        refresh_secs,
        false,
        secure,
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(k.clone(), HeaderValue::from_str(v).expect("value"));
        }
        m
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let m = h(&[(
            header::COOKIE,
            "a=1; ubtc_admin_csrf=xyz; ubtc_admin_csrf2=no",
        )]);
        assert_eq!(cookie(&m, CSRF_COOKIE), Some("xyz"));
        assert_eq!(cookie(&m, ACCESS_COOKIE), None);
        assert_eq!(
            cookie(&h(&[(header::COOKIE, "ubtc_admin_csrf=")]), CSRF_COOKIE),
            None
        );
    }

    #[test]
    fn constant_time_equality() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
