//! `renkei desk`: the liaison office's screen (地域連携室のデスク), a web
//! app served by the `renkei` binary on loopback for one profile and opened
//! in the ordinary browser. docs/DESK.md shows the screens.
//!
//! Trust does not move: keys stay in this process, and the browser sees
//! only what the library already verified, rendered escaped. The desk is a
//! thin front-end over the same operations as the CLI ([`crate::client`],
//! [`crate::files`], [`crate::document`]); its own code is the HTTP layer
//! ([`auth`]: token, session, Host and origin checks, CSP), the pages, and
//! a background sync with the relay ([`sync`]).
//!
//! Templates (askama, escaping by default) and static files are embedded
//! in the binary: nothing is loaded from anywhere else, fonts included.

mod assets;
mod auth;
mod compose;
mod pages;
mod stats;
mod sync;
mod view;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

use crate::client::store::LocalStore;
use crate::identity::Kind;
use crate::pki::CertInfo;
use crate::profile::{Profile, ProfileError};

/// Why the desk did not start.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// The profile is not usable.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] crate::client::store::LocalStoreError),
    /// The listen address is not loopback.
    #[error("the desk serves only on loopback (127.0.0.1 or ::1), not {0}: patient data and this facility's keys are behind it. Use --allow-non-loopback only behind your own protection")]
    NotLoopback(SocketAddr),
    /// The socket could not be opened.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How to run the desk.
#[derive(Debug, Clone)]
pub struct DeskOptions {
    /// Where to listen (loopback; port 0 for a free one).
    pub listen: SocketAddr,
    /// Allow a non-loopback address (explicit flag only).
    pub allow_non_loopback: bool,
    /// Seconds between background syncs.
    pub sync_interval: Duration,
    /// Idle time after which a session locks.
    pub idle_lock: Duration,
    /// Days after which a referral without a reply is overdue.
    pub overdue_days: u32,
    /// The relay URL (default: the profile's).
    pub relay: Option<String>,
}

impl DeskOptions {
    /// Options from the profile's `[desk]` settings, on 127.0.0.1.
    pub fn from_profile(p: &Profile) -> DeskOptions {
        let d = &p.config.desk;
        DeskOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], d.port.unwrap_or(0))),
            allow_non_loopback: false,
            sync_interval: Duration::from_secs(d.sync_interval_secs.max(1)),
            idle_lock: Duration::from_secs(d.idle_lock_minutes.max(1) * 60),
            overdue_days: d.overdue_days,
            relay: None,
        }
    }
}

/// The desk's shared state.
pub(crate) struct Desk {
    /// The profile folder.
    pub dir: PathBuf,
    /// The profile.
    pub profile: Profile,
    /// This facility's (or auditor's) verified certificate.
    pub me: CertInfo,
    /// The local store (facilities; auditors have their own).
    pub store: Option<LocalStore>,
    /// Token and sessions.
    pub auth: auth::Auth,
    /// Options.
    pub opts: DeskOptions,
    /// Serialises work with the relay (sync, send).
    pub work: tokio::sync::Mutex<()>,
    /// Where the background sync stands.
    pub sync: std::sync::RwLock<sync::SyncStatus>,
    /// Compose drafts awaiting confirmation.
    pub drafts: compose::Drafts,
}

impl Desk {
    /// Whether this is an auditor's desk.
    pub fn is_auditor(&self) -> bool {
        self.me.kind == Kind::Auditor
    }

    /// The facility's local store.
    pub fn store(&self) -> &LocalStore {
        self.store.as_ref().expect("a facility desk has a store")
    }

    /// Where received packages are released.
    pub fn received_dir(&self) -> PathBuf {
        self.profile.path("received")
    }
}

pub(crate) type DeskState = Arc<Desk>;

/// A running desk.
pub struct RunningDesk {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The URL with the token (`http://127.0.0.1:PORT/?token=…`). Print it
    /// once; never log it.
    pub url: String,
    /// The server task (ends when the shutdown future resolves).
    pub task: tokio::task::JoinHandle<()>,
}

fn is_loopback(a: &SocketAddr) -> bool {
    a.ip().is_loopback()
}

/// Start the desk for the profile in `dir`: bind, start the background
/// sync, serve until `shutdown` resolves.
pub async fn start(
    dir: &Path,
    opts: DeskOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningDesk, DeskError> {
    if !is_loopback(&opts.listen) && !opts.allow_non_loopback {
        return Err(DeskError::NotLoopback(opts.listen));
    }
    let profile = Profile::open(dir)?;
    let me = profile.certificate()?;
    let store = if me.kind == Kind::Auditor {
        None
    } else {
        profile.facility_id()?;
        Some(LocalStore::open(dir).await?)
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| DeskError::Listen(opts.listen, e))?;
    let addr = listener.local_addr()?;
    let auth = auth::Auth::new(addr.port(), opts.idle_lock);
    let url = format!("http://{addr}/?token={}", auth.token());
    let drafts = compose::Drafts::new(&profile)?;
    let desk = Arc::new(Desk {
        dir: dir.to_path_buf(),
        profile,
        me,
        store,
        auth,
        opts,
        work: tokio::sync::Mutex::new(()),
        sync: Default::default(),
        drafts,
    });
    let syncer = tokio::spawn(sync::run(desk.clone()));
    let app = router(desk);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "desk server stopped");
        }
        syncer.abort();
    });
    Ok(RunningDesk { addr, url, task })
}

fn router(desk: DeskState) -> Router {
    Router::new()
        .route("/", get(pages::inbox))
        .route("/r/{envelope}/", get(pages::package))
        .route("/r/{envelope}/open", post(pages::open_package))
        .route("/r/{envelope}/print", get(pages::print_received))
        .route("/r/{envelope}/attachments/{*name}", get(pages::attachment))
        .route("/threads", get(pages::threads))
        .route("/threads/{thread}", get(pages::thread))
        .route("/threads/{thread}/close", post(pages::close_thread))
        .route(
            "/compose",
            get(compose::form)
                .post(compose::check)
                .layer(axum::extract::DefaultBodyLimit::max(
                    compose::MAX_UPLOAD_BYTES,
                )),
        )
        .route("/compose/{draft}", get(compose::confirm))
        .route("/compose/{draft}/send", post(compose::send))
        .route("/compose/{draft}/edit", get(compose::edit))
        .route("/compose/{draft}/print", get(compose::print))
        .route("/compose/{draft}/discard", post(compose::discard))
        .route("/directory", get(compose::directory))
        .route("/directory/{id}/favourite", post(compose::favourite))
        .route("/sent", get(pages::sent))
        .route("/sent/{package}/print", get(pages::print_sent))
        .route("/outbox/flush", post(pages::flush))
        .route("/sync", post(pages::sync_now))
        .route("/stats", get(stats::page))
        .route("/stats.csv", get(stats::csv))
        .route("/audit", get(pages::audit))
        .route("/audit/report.csv", get(pages::audit_csv))
        .route("/settings", get(pages::settings))
        .route("/api/badge", get(pages::badge))
        .route("/static/{file}", get(assets::serve))
        .fallback(pages::not_found_page)
        .layer(axum::middleware::from_fn_with_state(
            desk.clone(),
            auth::guard,
        ))
        .with_state(desk)
}
