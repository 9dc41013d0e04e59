//! Who may use the desk, and how a browser proves it.
//!
//! - The desk binds to loopback only (checked in [`super::start`]).
//! - A URL token (256 random bits, new at every start, printed once on
//!   standard output, never logged) opens a session: `/?token=…` sets an
//!   HttpOnly, SameSite=Strict cookie named after the port and redirects to
//!   `/` without the token. The token stays valid while the desk runs, so
//!   the printed URL opens a second tab or unlocks the desk again.
//! - A session locks after the idle time; every request without a live
//!   session gets 401 and a page asking for the printed URL.
//! - The `Host` header must name this desk on loopback (DNS rebinding);
//!   anything else gets 403. There are no CORS headers and preflights are
//!   refused.
//! - Every state change is a POST from this origin (`Origin`, or
//!   `Sec-Fetch-Site: same-origin` when a browser sends no `Origin`) that
//!   carries the session's CSRF token; GET changes nothing.
//! - Every answer carries a strict Content-Security-Policy and
//!   `Cache-Control: no-store` (static files excepted).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use zeroize::Zeroizing;

use super::{pages, DeskState};

/// A random secret, base64url without padding (256 bits).
fn random_secret() -> Zeroizing<String> {
    let mut b = Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), b.as_mut())
        .expect("system randomness");
    Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b.as_ref()))
}

/// Equality of two secrets in time that depends only on their lengths.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// One browser session.
struct Live {
    csrf: Zeroizing<String>,
    last_seen: Instant,
}

/// The URL token and the live sessions. No `Debug`: it holds secrets.
pub(crate) struct Auth {
    token: Zeroizing<String>,
    sessions: Mutex<HashMap<String, Live>>,
    idle: Duration,
    cookie_name: String,
    hosts: [String; 3],
    origins: [String; 3],
}

/// The session of an authenticated request (a request extension).
#[derive(Clone)]
pub(crate) struct Authed {
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
}

impl Auth {
    /// A new token for a desk on `port`.
    pub(crate) fn new(port: u16, idle: Duration) -> Auth {
        let hosts = [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        let origins = hosts.clone().map(|h| format!("http://{h}"));
        Auth {
            token: random_secret(),
            sessions: Mutex::new(HashMap::new()),
            idle,
            cookie_name: format!("renkei_desk_{port}"),
            hosts,
            origins,
        }
    }

    /// The URL token (printed once by the caller).
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    fn open_session(&self) -> String {
        let id = random_secret();
        let mut s = self.sessions.lock().expect("lock");
        let now = Instant::now();
        s.retain(|_, l| now.duration_since(l.last_seen) < self.idle);
        s.insert(
            id.to_string(),
            Live {
                csrf: random_secret(),
                last_seen: now,
            },
        );
        id.to_string()
    }

    /// The live session named by the cookie, touched; `Err(true)` when it
    /// existed but locked after the idle time.
    fn session(&self, headers: &HeaderMap) -> Result<Authed, bool> {
        let id = cookie(headers, &self.cookie_name).ok_or(false)?;
        let mut s = self.sessions.lock().expect("lock");
        let now = Instant::now();
        let (key, live) = s
            .iter_mut()
            .find(|(k, _)| same(k, &id))
            .map(|(k, l)| (k.clone(), l))
            .ok_or(false)?;
        if now.duration_since(live.last_seen) >= self.idle {
            s.remove(&key);
            return Err(true);
        }
        live.last_seen = now;
        Ok(Authed {
            csrf: live.csrf.to_string(),
        })
    }

    /// Whether `token` is this session's CSRF token.
    pub(crate) fn csrf_ok(&self, authed: &Authed, token: &str) -> bool {
        !token.is_empty() && same(&authed.csrf, token)
    }

    fn host_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| self.hosts.iter().any(|x| x == h))
    }

    /// Whether a request comes from the desk's own pages: the browser's
    /// `Sec-Fetch-Site` (which pages cannot set) says same-origin when it
    /// is sent, and `Origin` names this desk — or is `null`, as browsers
    /// send it under `Referrer-Policy: no-referrer`, in which case
    /// `Sec-Fetch-Site` must be there.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if site.is_some_and(|v| v != "same-origin") {
            return false;
        }
        match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            Some("null") | None => site == Some("same-origin"),
            Some(o) => self.origins.iter().any(|x| x == o),
        }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The `token` query parameter, if any.
fn token_param(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v.to_string())
}

/// The security headers of every answer.
fn harden(resp: &mut Response, cacheable: bool) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !cacheable {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
}

/// The guard in front of every route (see the module documentation).
pub(crate) async fn guard(State(st): State<DeskState>, mut req: Request, next: Next) -> Response {
    let auth = &st.auth;
    let is_static = req.uri().path().starts_with("/static/");
    let mut resp = if !auth.host_ok(req.headers()) {
        (
            StatusCode::FORBIDDEN,
            "this desk answers only on 127.0.0.1, localhost or [::1] with its own port",
        )
            .into_response()
    } else if req.method() == Method::OPTIONS {
        (StatusCode::FORBIDDEN, "cross-origin requests are refused").into_response()
    } else if req.method() != Method::GET
        && req.method() != Method::HEAD
        && !auth.same_origin(req.headers())
    {
        (
            StatusCode::FORBIDDEN,
            "a change must come from the desk's own pages",
        )
            .into_response()
    } else if is_static {
        next.run(req).await
    } else if let Some(t) = token_param(req.uri().query()) {
        if req.method() == Method::GET && req.uri().path() == "/" && same(&t, auth.token()) {
            let id = auth.open_session();
            let cookie = format!(
                "{}={id}; Path=/; HttpOnly; SameSite=Strict",
                auth.cookie_name
            );
            let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_str(&cookie).expect("ASCII"),
            );
            r
        } else {
            pages::unauthorized(false)
        }
    } else {
        match auth.session(req.headers()) {
            Ok(a) => {
                req.extensions_mut().insert(a);
                next.run(req).await
            }
            Err(locked) => pages::unauthorized(locked),
        }
    };
    harden(&mut resp, is_static);
    resp
}
