//! Directory self-monitoring (`renkei directory monitor`, the desk's
//! sync): every certificate published through the relay is a leaf of its
//! log. The facility reads the directory leaves it has not scanned yet,
//! proves each one included in a checkpoint it verified (relay signature,
//! witness quorum, consistency with what it saw before), and raises an
//! alert for every certificate for its own ID that it did not publish.
//!
//! "Did not publish": a certificate this profile publishes carries the
//! profile's own signing key and age recipient (`profile install` refuses
//! any other, and the relay logs a certificate only when the publisher
//! connects with it, so holds its private key). A certificate for this
//! facility's ID with another signing key or age recipient is someone
//! else's: a CA that issued it without the facility (compromised, or
//! deceived), or a relay that logged it. Renewals keep the keys, so they
//! never alarm.
//!
//! Alerts are kept in the local store as evidence (the leaf, its inclusion
//! proof and the checkpoint) and reported on every run until acknowledged.
//! An alert is *active* while its certificate still validates against the
//! profile's CA and CRL (others would accept it); a revoked or expired one
//! is still listed, as no longer valid.

use base64::Engine as _;
use hyper::Method;
use serde::Serialize;
use sqlx::Row;

use super::http::RelayClient;
use super::ops::{OpError, Session};
use crate::api::{DirectoryLeaf, DirectoryLeaves, MAX_DIRECTORY_BODY};
use crate::log::{self, Checkpoint, Hash};
use crate::pki::{CertError, CertInfo};
use crate::receipt::LogEntry;

/// A certificate for this facility's ID that it did not publish.
#[derive(Debug, Clone, Serialize)]
pub struct DirectoryAlert {
    /// Leaf index in the relay's log.
    pub log_index: u64,
    /// The ID the log entry names.
    pub facility_id: String,
    /// When the relay logged it (RFC 3339, from the entry).
    pub published_at: String,
    /// Serial number, hex.
    pub serial: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    /// Issuer (CA name).
    pub issuer: String,
    /// Name in the certificate.
    pub name: String,
    /// Kind in the certificate.
    pub kind: String,
    /// Validity.
    pub not_before: String,
    /// Validity.
    pub not_after: String,
    /// Its signing key, hex.
    pub signing_key: String,
    /// Its age recipient.
    pub age_recipient: Option<String>,
    /// True while the certificate validates against this profile's CA and
    /// CRL now (others would accept it).
    pub active: bool,
    /// Why it no longer validates (revoked, expired, ...), when not active.
    pub inactive_because: Option<String>,
    /// When this profile found it.
    pub found_at: String,
    /// The certificate, PEM.
    pub certificate: String,
}

/// What one scan found.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorReport {
    /// The facility (or service) ID watched.
    pub id: String,
    /// The log's origin.
    pub origin: String,
    /// Tree size of the checkpoint scanned against.
    pub tree_size: u64,
    /// First leaf index read this time.
    pub scanned_from: u64,
    /// Directory leaves read this time.
    pub leaves_read: u64,
    /// Alerts found this time.
    pub new_alerts: u64,
    /// Every alert not acknowledged (new and older), in log order.
    pub alerts: Vec<DirectoryAlert>,
}

impl MonitorReport {
    /// Whether some unacknowledged alert's certificate still validates.
    pub fn has_active_alert(&self) -> bool {
        self.alerts.iter().any(|a| a.active)
    }
}

/// Whether a certificate logged under `entry_id` is a foreign one for
/// `own_id`: it names this ID (in the entry or in the certificate) but is
/// not for this profile's own signing key and age recipient.
fn is_foreign(
    c: &CertInfo,
    entry_id: &str,
    own_id: &str,
    own_key: &[u8; 32],
    own_recipient: Option<&str>,
) -> bool {
    let cert_id = c.id.to_string();
    if cert_id != own_id && entry_id != own_id {
        return false;
    }
    !(cert_id == own_id && &c.signing_key == own_key && c.age_recipient.as_deref() == own_recipient)
}

/// Verify that every leaf of `page` is included in `cp`.
pub fn verify_page(page: &DirectoryLeaves, cp: &Checkpoint) -> Result<(), OpError> {
    for l in &page.leaves {
        let leaf = log::leaf_hash(l.entry.as_bytes());
        log::verify_inclusion(l.index, cp.size, &leaf, &l.inclusion, &cp.root).map_err(|e| {
            OpError::Relay(format!(
                "directory leaf {} is not in the relay's checkpoint of size {}: {e}",
                l.index, cp.size
            ))
        })?;
    }
    Ok(())
}

/// The certificate of a directory leaf (`None` for a CRL); a leaf that
/// is neither, or whose certificate cannot be read, is the relay's fault
/// ([`DirectoryLeaf::certificate`]).
pub fn leaf_certificate(l: &DirectoryLeaf) -> Result<Option<(String, CertInfo, String)>, OpError> {
    l.certificate().map_err(|e| OpError::Relay(e.to_string()))
}

fn encode_hashes(v: &[Hash]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::to_string(&v.iter().map(|h| b64.encode(h)).collect::<Vec<_>>())
        .expect("serializable")
}

impl Session {
    /// Fetch and verify the relay's newest checkpoint
    /// ([`Session::check_checkpoint`]); `None` when the log is empty.
    pub async fn verified_checkpoint(&self) -> Result<Option<(Checkpoint, String)>, OpError> {
        let resp = self
            .client
            .send(Method::GET, "/v1/log/checkpoint", &[], super::http::empty())
            .await?;
        if resp.status == hyper::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let (_, body, relay) = RelayClient::read(resp, 1 << 20).await?;
        let note = String::from_utf8(body.to_vec())
            .map_err(|_| OpError::Relay("the relay's checkpoint is not UTF-8".into()))?;
        let cp = self.check_checkpoint(&note, &relay).await?;
        Ok(Some((cp, note)))
    }

    /// Every directory leaf (certificate or CRL published) with index in
    /// `[from, cp.size)`, page by page, each proved included in `cp` (a
    /// checkpoint verified with [`Session::check_checkpoint`]).
    pub async fn directory_leaves(
        &self,
        from: u64,
        cp: &Checkpoint,
    ) -> Result<Vec<DirectoryLeaf>, OpError> {
        let mut from = from;
        let mut out = Vec::new();
        while from < cp.size {
            let path = format!("/v1/log/directory?from={from}&size={}", cp.size);
            let resp = self
                .client
                .send(Method::GET, &path, &[], super::http::empty())
                .await?;
            let (_, body, _) = RelayClient::read(resp, MAX_DIRECTORY_BODY).await?;
            let page = DirectoryLeaves::parse(&body, from, cp.size)
                .map_err(|e| OpError::Relay(e.to_string()))?;
            verify_page(&page, cp)?;
            let next = page.next;
            out.extend(page.leaves);
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        Ok(out)
    }

    /// Scan the directory leaves logged since the last scan for
    /// certificates for this profile's ID that it did not publish; keep
    /// them as alerts; return every alert not acknowledged.
    pub async fn monitor_directory(&self) -> Result<MonitorReport, OpError> {
        let own_id = self.profile.config.id.clone();
        let own_key = self.profile.signing_key()?.public_key();
        let own_recipient = if self.profile.config.kind.is_facility() {
            Some(self.profile.age_identity()?.recipient().to_string())
        } else {
            None
        };
        let Some((cp, note)) = self.verified_checkpoint().await? else {
            return Ok(MonitorReport {
                id: own_id,
                origin: String::new(),
                tree_size: 0,
                scanned_from: 0,
                leaves_read: 0,
                new_alerts: 0,
                alerts: Vec::new(),
            });
        };
        let origin = cp.origin.clone();
        let pool = self.store.pool();
        let start: u64 = sqlx::query("SELECT next_index FROM directory_scan WHERE origin = ?")
            .bind(&origin)
            .fetch_optional(pool)
            .await
            .map_err(super::store::LocalStoreError::from)?
            .map(|r| r.get::<i64, _>(0) as u64)
            .unwrap_or(0);
        let leaves = self.directory_leaves(start, &cp).await?;
        let mut found: Vec<&DirectoryLeaf> = Vec::new();
        let mut logged: Vec<(String, String, u64)> = Vec::new();
        for l in &leaves {
            if let Some((entry_id, c, _)) = leaf_certificate(l)? {
                if is_foreign(&c, &entry_id, &own_id, &own_key, own_recipient.as_deref()) {
                    found.push(l);
                }
                logged.push((c.fingerprint.clone(), entry_id, l.index));
            }
        }
        let now = crate::receipt::now_rfc3339();
        let mut tx = pool
            .begin()
            .await
            .map_err(super::store::LocalStoreError::from)?;
        for (fingerprint, facility_id, index) in &logged {
            sqlx::query(
                "INSERT OR IGNORE INTO directory_logged (origin, fingerprint, facility_id, log_index) VALUES (?, ?, ?, ?)",
            )
            .bind(&origin)
            .bind(fingerprint)
            .bind(facility_id)
            .bind(*index as i64)
            .execute(&mut *tx)
            .await
            .map_err(super::store::LocalStoreError::from)?;
        }
        for l in &found {
            sqlx::query(
                "INSERT OR IGNORE INTO directory_alerts (origin, log_index, entry, inclusion, checkpoint, found_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&origin)
            .bind(l.index as i64)
            .bind(&l.entry)
            .bind(encode_hashes(&l.inclusion))
            .bind(&note)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(super::store::LocalStoreError::from)?;
        }
        if cp.size > start {
            sqlx::query(
                "INSERT INTO directory_scan (origin, next_index, tree_size, scanned_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (origin) DO UPDATE SET next_index = excluded.next_index, \
                 tree_size = excluded.tree_size, scanned_at = excluded.scanned_at",
            )
            .bind(&origin)
            .bind(cp.size as i64)
            .bind(cp.size as i64)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(super::store::LocalStoreError::from)?;
        }
        tx.commit()
            .await
            .map_err(super::store::LocalStoreError::from)?;
        Ok(MonitorReport {
            id: own_id,
            origin,
            tree_size: cp.size,
            scanned_from: start,
            leaves_read: leaves.len() as u64,
            new_alerts: found.len() as u64,
            alerts: self.directory_alerts().await?,
        })
    }

    /// Whether the certificate of `fingerprint` is in a directory leaf of
    /// the relay's log, proved included in a checkpoint this profile
    /// accepted (with its witness quorum): first among the leaves already
    /// scanned, then after scanning the new ones ([`Self::monitor_directory`],
    /// which also raises its alerts).
    pub async fn certificate_is_logged(&self, fingerprint: &str) -> Result<bool, OpError> {
        let known = |fp: String| async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM directory_logged WHERE fingerprint = ?",
            )
            .bind(fp)
            .fetch_one(self.store.pool())
            .await
            .map(|n| n > 0)
            .map_err(super::store::LocalStoreError::from)
        };
        if known(fingerprint.to_string()).await? {
            return Ok(true);
        }
        self.monitor_directory().await?;
        Ok(known(fingerprint.to_string()).await?)
    }

    /// Every alert not acknowledged, in log order, with whether its
    /// certificate still validates now.
    pub async fn directory_alerts(&self) -> Result<Vec<DirectoryAlert>, OpError> {
        let rows = sqlx::query(
            "SELECT log_index, entry, found_at FROM directory_alerts WHERE acknowledged_at IS NULL ORDER BY origin, log_index",
        )
        .fetch_all(self.store.pool())
        .await
        .map_err(super::store::LocalStoreError::from)?;
        let mut out = Vec::new();
        for r in rows {
            let index = r.get::<i64, _>(0) as u64;
            let text: String = r.get(1);
            let Ok(LogEntry::Certificate {
                facility_id,
                certificate,
                published_at,
            }) = LogEntry::parse(text.as_bytes())
            else {
                continue;
            };
            let Ok(c) = CertInfo::parse_pem(certificate.as_bytes(), "logged certificate") else {
                continue;
            };
            let (active, inactive_because) = match self.trust.verify(&c.der, None) {
                Ok(_) => (true, None),
                Err(e @ (CertError::Revoked { .. } | CertError::Expired { .. })) => {
                    (false, Some(e.to_string()))
                }
                Err(CertError::UnknownIssuer(_)) => (
                    false,
                    Some("it was not issued by this profile's CA".to_string()),
                ),
                Err(e) => (false, Some(e.to_string())),
            };
            out.push(DirectoryAlert {
                log_index: index,
                facility_id,
                published_at,
                serial: c.serial.clone(),
                fingerprint: c.fingerprint.clone(),
                issuer: c.issuer.clone(),
                name: c.name.clone(),
                kind: c.kind.to_string(),
                not_before: c.not_before.clone(),
                not_after: c.not_after.clone(),
                signing_key: hex::encode(c.signing_key),
                age_recipient: c.age_recipient.clone(),
                active,
                inactive_because,
                found_at: r.get(2),
                certificate: c.pem(),
            });
        }
        Ok(out)
    }

    /// Acknowledge the alert of leaf `log_index` (the facility has dealt
    /// with it: told the CA, had the certificate revoked). False when no
    /// unacknowledged alert has that index.
    pub async fn acknowledge_directory_alert(&self, log_index: u64) -> Result<bool, OpError> {
        let n = sqlx::query(
            "UPDATE directory_alerts SET acknowledged_at = ? WHERE log_index = ? AND acknowledged_at IS NULL",
        )
        .bind(crate::receipt::now_rfc3339())
        .bind(log_index as i64)
        .execute(self.store.pool())
        .await
        .map_err(super::store::LocalStoreError::from)?
        .rows_affected();
        Ok(n > 0)
    }
}

/// A certificate in the relay's log that the CA has no record of issuing.
#[derive(Debug, Clone, Serialize)]
pub struct Unrecorded {
    /// Leaf index.
    pub log_index: u64,
    /// The ID the entry names.
    pub facility_id: String,
    /// When the relay logged it.
    pub published_at: String,
    /// Serial, hex.
    pub serial: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    /// Issuer in the certificate.
    pub issuer: String,
    /// Name and kind in the certificate.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Why it does not match the CA's records.
    pub why: String,
    /// The certificate, PEM.
    pub certificate: String,
}

/// What `renkei ca reconcile` found.
#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    /// Tree size of the checkpoint read against.
    pub tree_size: u64,
    /// Certificates in the log.
    pub certificates: u64,
    /// Those the CA has no record of.
    pub unrecorded: Vec<Unrecorded>,
}

impl Session {
    /// Read every certificate published in the relay's log (each leaf
    /// proved included in a verified checkpoint) and compare it with the
    /// CA's records.
    pub async fn reconcile_ca(
        &self,
        records: &crate::pki::ca::Records,
    ) -> Result<Reconciliation, OpError> {
        let Some((cp, _)) = self.verified_checkpoint().await? else {
            return Ok(Reconciliation {
                tree_size: 0,
                certificates: 0,
                unrecorded: Vec::new(),
            });
        };
        let mut out = Reconciliation {
            tree_size: cp.size,
            certificates: 0,
            unrecorded: Vec::new(),
        };
        for l in self.directory_leaves(0, &cp).await? {
            let Some((facility_id, c, published_at)) = leaf_certificate(&l)? else {
                continue;
            };
            out.certificates += 1;
            if let Err(why) = records.check(&c) {
                out.unrecorded.push(Unrecorded {
                    log_index: l.index,
                    facility_id,
                    published_at,
                    serial: c.serial.clone(),
                    fingerprint: c.fingerprint.clone(),
                    issuer: c.issuer.clone(),
                    name: c.name.clone(),
                    kind: c.kind.to_string(),
                    why,
                    certificate: c.pem(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::MemoryTree;

    fn cert_entry(id: &str) -> String {
        let pem = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/keys-example/clinic/cert.pem"
        ))
        .unwrap();
        LogEntry::Certificate {
            facility_id: id.into(),
            certificate: pem,
            published_at: "2026-12-01T00:00:00Z".into(),
        }
        .to_text()
    }

    #[test]
    fn every_leaf_must_prove_into_the_checkpoint() {
        let entries = [
            cert_entry("1311234569"),
            "r".into(),
            cert_entry("1311234569"),
        ];
        let tree = MemoryTree::from_entries(entries.iter().map(|e| e.as_bytes()));
        let cp = Checkpoint {
            origin: "o".into(),
            size: 3,
            root: tree.root(),
            extensions: vec![],
        };
        let leaf = |i: u64, entry: &str| DirectoryLeaf {
            index: i,
            entry: entry.into(),
            inclusion: tree.inclusion_proof(i, 3).unwrap(),
        };
        let good = DirectoryLeaves {
            tree_size: 3,
            leaves: vec![leaf(0, &entries[0]), leaf(2, &entries[2])],
            next: None,
        };
        verify_page(&good, &cp).unwrap();
        // Another leaf's text under an index, an altered entry, a wrong proof.
        for bad in [
            leaf(1, &entries[0]),
            leaf(0, &entries[0].replace("2026", "2025")),
            DirectoryLeaf {
                inclusion: tree.inclusion_proof(1, 3).unwrap(),
                ..leaf(0, &entries[0])
            },
        ] {
            let page = DirectoryLeaves {
                tree_size: 3,
                leaves: vec![bad],
                next: None,
            };
            assert!(matches!(verify_page(&page, &cp), Err(OpError::Relay(_))));
        }
    }

    #[test]
    fn receipts_and_unreadable_certificates_are_not_directory_leaves() {
        let l = |entry: &str| DirectoryLeaf {
            index: 4,
            entry: entry.into(),
            inclusion: vec![],
        };
        let (id, c, _) = leaf_certificate(&l(&cert_entry("1311234569")))
            .unwrap()
            .unwrap();
        assert_eq!(
            (id.as_str(), c.id.to_string().as_str()),
            ("1311234569", "1311234569")
        );
        let crl = LogEntry::Crl {
            crl_number: "1".into(),
            crl: "x".into(),
            published_at: "t".into(),
        }
        .to_text();
        assert!(leaf_certificate(&l(&crl)).unwrap().is_none());
        for bad in [
            "{}".to_string(),
            "not json".into(),
            r#"{"type":"receipt","signer":"x","receipt":{}}"#.into(),
            cert_entry("1311234569").replace("MII", "XXX"),
        ] {
            assert!(
                matches!(leaf_certificate(&l(&bad)), Err(OpError::Relay(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn foreign_means_this_id_with_other_keys() {
        let c = CertInfo::parse_pem(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/keys-example/clinic/cert.pem"
            ))
            .unwrap(),
            "t",
        )
        .unwrap();
        let id = c.id.to_string();
        let key = c.signing_key;
        let r = c.age_recipient.clone();
        assert!(!is_foreign(&c, &id, &id, &key, r.as_deref()));
        assert!(is_foreign(&c, &id, &id, &[1; 32], r.as_deref()));
        assert!(is_foreign(&c, &id, &id, &key, Some("age1other")));
        assert!(!is_foreign(&c, &id, "1317654323", &[1; 32], None));
        // An entry naming this ID with another facility's certificate.
        assert!(is_foreign(&c, "1317654323", "1317654323", &[1; 32], None));
    }
}
