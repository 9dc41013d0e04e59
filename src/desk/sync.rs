//! The desk's background sync with the relay, every `sync_interval`: the
//! CRL, the outbox, receipts not yet confirmed, every envelope waiting in
//! the inbox, and the receipts of sent packages whose outcome is not known
//! yet, and the directory leaves of the log (self-monitoring: a
//! certificate for this facility's ID that it did not publish raises the
//! banner; an auditor's desk syncs the auditor instead). Everything goes
//! through the same library operations as the CLI, one at a time
//! ([`super::Desk::work`]).

use std::time::Duration;

use super::view;
use super::{Desk, DeskState};
use crate::client::monitor::DirectoryAlert;
use crate::client::ops::Session;
use crate::client::threads::Receipts;

/// Where the background sync stands.
#[derive(Debug, Default, Clone)]
pub(crate) struct SyncStatus {
    /// When the last sync started (RFC 3339).
    pub last_attempt: Option<String>,
    /// When a sync last completed (RFC 3339).
    pub last_success: Option<String>,
    /// Why the last sync failed (no patient data: relay and network errors).
    pub error: Option<String>,
    /// Packages received by the last sync.
    pub received: usize,
    /// Outbox envelopes the relay accepted in the last sync.
    pub sent: usize,
    /// When the directory was last copied (verified) into the local store.
    pub directory_at: Option<std::time::Instant>,
    /// Certificates for this facility's ID that it did not publish and
    /// that are still valid, from the last directory scan (the banner).
    pub directory_alerts: Vec<DirectoryAlert>,
}

impl SyncStatus {
    /// One line for the header, and whether it is a warning.
    pub(crate) fn line(&self) -> (String, bool) {
        match (&self.error, &self.last_success) {
            (Some(e), Some(ok)) => (
                format!(
                    "中継サーバーと同期できません（最終同期 {}）: {e}",
                    view::when(ok)
                ),
                true,
            ),
            (Some(e), None) => (format!("中継サーバーと同期できません: {e}"), true),
            (None, Some(ok)) => (format!("最終同期 {}", view::when(ok)), false),
            (None, None) => ("同期待ち".to_string(), false),
        }
    }
}

/// Sync forever, every `sync_interval`.
pub(crate) async fn run(desk: DeskState) {
    loop {
        sync_once(&desk).await;
        tokio::time::sleep(desk.opts.sync_interval).await;
    }
}

/// One sync; its outcome goes into [`Desk::sync`].
pub(crate) async fn sync_once(desk: &Desk) {
    let started = crate::receipt::now_rfc3339();
    desk.sync.write().expect("lock").last_attempt = Some(started);
    let result = if desk.is_auditor() {
        audit(desk).await.map(|_| (0, 0))
    } else {
        facility(desk).await
    };
    let mut s = desk.sync.write().expect("lock");
    match result {
        Ok((received, sent)) => {
            s.last_success = Some(crate::receipt::now_rfc3339());
            s.error = None;
            s.received = received;
            s.sent = sent;
        }
        Err(e) => s.error = Some(e),
    }
}

async fn facility(desk: &Desk) -> Result<(usize, usize), String> {
    let _one = desk.work.lock().await;
    let s = Session::open(&desk.dir, desk.opts.relay.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(why) = &s.offline {
        return Err(why.clone());
    }
    let stale = desk
        .sync
        .read()
        .expect("lock")
        .directory_at
        .is_none_or(|t| t.elapsed() > DIRECTORY_EVERY);
    if stale {
        refresh_directory(&s).await?;
        desk.sync.write().expect("lock").directory_at = Some(std::time::Instant::now());
    }
    let flushed = s.flush_outbox().await.map_err(|e| e.to_string())?;
    let received = s
        .receive_all(&desk.received_dir())
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|(_, r)| r.is_ok())
        .count();
    refresh_pending(&s).await?;
    // Directory self-monitoring, after the day's work is done (a relay
    // that fails it still delivered what it could): a certificate for
    // this facility's ID that it did not publish raises the banner until
    // it is revoked.
    let report = s.monitor_directory().await.map_err(|e| e.to_string())?;
    desk.sync.write().expect("lock").directory_alerts =
        report.alerts.into_iter().filter(|a| a.active).collect();
    Ok((received, flushed.accepted.len()))
}

/// How often the directory is copied into the local store.
const DIRECTORY_EVERY: Duration = Duration::from_secs(600);

/// Keep every directory certificate that verifies (the addressees the
/// compose form offers, also when the relay is unreachable later).
async fn refresh_directory(s: &Session) -> Result<(), String> {
    for c in s
        .directory_search(None, None)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .flatten()
    {
        s.store
            .cache_certificate(&c, false)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Fetch the receipts of sent packages that some recipient has no outcome
/// for yet (each verified and kept by [`Session::envelope_receipts`]).
async fn refresh_pending(s: &Session) -> Result<(), String> {
    let store = &s.store;
    for sent in store.sent(None).await.map_err(|e| e.to_string())? {
        let bundles = store
            .bundles(&sent.envelope_id)
            .await
            .map_err(|e| e.to_string())?;
        let r = Receipts::from_bundles(&sent.envelope_id, &bundles);
        let open = sent
            .recipients
            .iter()
            .any(|rid| !r.outcomes.iter().any(|o| &o.recipient == rid));
        if open {
            s.envelope_receipts(&sent.envelope_id)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

async fn audit(desk: &Desk) -> Result<(), String> {
    let _one = desk.work.lock().await;
    let a = crate::audit::sync::Auditor::open(&desk.dir, desk.opts.relay.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(300), a.sync(false))
        .await
        .map_err(|_| "the audit sync took more than 5 minutes".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(())
}
