//! `renkei audit report`: counts per facility, envelopes past the delivery
//! deadline with no outcome, rejections with reasons, IDs that got a new
//! key, problems found.

use std::collections::BTreeMap;

use serde::Serialize;

use super::sync::{AuditError, Auditor};
use crate::pki::CertInfo;
use crate::receipt::LogEntry;

/// Days after acceptance by which every recipient should have an outcome.
pub const DEADLINE_DAYS: i64 = 14;

/// Per-facility counts.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FacilityCounts {
    /// Envelopes submitted.
    pub sent: u64,
    /// Envelopes addressed to it.
    pub received: u64,
    /// Delivery receipts "verified" it signed.
    pub delivered: u64,
    /// Rejections it signed.
    pub rejected: u64,
    /// Expiries of envelopes addressed to it.
    pub expired: u64,
}

/// The report.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// Counts by facility ID.
    pub facilities: BTreeMap<String, FacilityCounts>,
    /// (envelope, recipient, accepted_at) with no outcome past the deadline.
    pub overdue: Vec<(String, String, String)>,
    /// (envelope, recipient, reason).
    pub rejections: Vec<(String, String, String)>,
    /// Certificates published for an ID that already had a certificate
    /// for other keys, in log order.
    pub key_changes: Vec<KeyChange>,
    /// Problems found by syncs (found_at, leaf index, what).
    pub problems: Vec<(String, Option<i64>, String)>,
}

/// An ID that got a new key: a certificate in the log for an ID whose
/// earlier certificates carry another signing key or age recipient. A
/// facility that replaced its keys shows here, and so does a certificate
/// the CA issued to someone else in a facility's name.
#[derive(Debug, Clone, Serialize)]
pub struct KeyChange {
    /// The ID.
    pub facility_id: String,
    /// Leaf index of the new certificate.
    pub log_index: u64,
    /// When the relay logged it.
    pub published_at: String,
    /// Serial of the new certificate.
    pub serial: String,
    /// SHA-256 fingerprint of the new certificate.
    pub fingerprint: String,
    /// Fingerprint of the ID's certificate logged just before it.
    pub previous_fingerprint: String,
    /// Leaf index of that certificate.
    pub previous_log_index: u64,
}

/// The key changes among certificate entries `(leaf index, entry text)`
/// given in log order.
pub fn key_changes(entries: &[(u64, String)]) -> Vec<KeyChange> {
    // Per ID: every (signing key, age recipient) seen, and the last certificate.
    type Keys = (Vec<([u8; 32], Option<String>)>, (u64, String));
    let mut seen: BTreeMap<String, Keys> = BTreeMap::new();
    let mut out = Vec::new();
    for (idx, text) in entries {
        let Ok(LogEntry::Certificate {
            facility_id,
            certificate,
            published_at,
        }) = LogEntry::parse(text.as_bytes())
        else {
            continue;
        };
        let Ok(c) = CertInfo::parse_pem(certificate.as_bytes(), "certificate") else {
            continue;
        };
        let keys = (c.signing_key, c.age_recipient.clone());
        match seen.get_mut(&facility_id) {
            None => {
                seen.insert(facility_id, (vec![keys], (*idx, c.fingerprint)));
            }
            Some((known, last)) => {
                if !known.contains(&keys) {
                    out.push(KeyChange {
                        facility_id: facility_id.clone(),
                        log_index: *idx,
                        published_at,
                        serial: c.serial.clone(),
                        fingerprint: c.fingerprint.clone(),
                        previous_fingerprint: last.1.clone(),
                        previous_log_index: last.0,
                    });
                    known.push(keys);
                }
                *last = (*idx, c.fingerprint);
            }
        }
    }
    out
}

/// Build the report from the auditor's verified store.
pub async fn build(a: &Auditor, since: Option<&str>) -> Result<Report, AuditError> {
    let mut r = Report {
        problems: a.problems().await?,
        key_changes: key_changes(&a.certificate_entries().await?),
        ..Default::default()
    };
    let now = time::OffsetDateTime::now_utc();
    let mut pending: BTreeMap<(String, String), String> = BTreeMap::new();
    for (_, env, purpose, signer, body) in a.all_receipts().await? {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let when = ["submitted_at", "accepted_at", "delivered_at", "expired_at"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
            .unwrap_or("")
            .to_string();
        if since.is_some_and(|s| when.as_str() < s) {
            continue;
        }
        match purpose.as_str() {
            "submission" => {
                r.facilities.entry(signer.clone()).or_default().sent += 1;
                for rec in v
                    .get("recipients")
                    .and_then(|x| x.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(id) = rec.as_str() {
                        r.facilities.entry(id.to_string()).or_default().received += 1;
                        pending.insert((env.clone(), id.to_string()), when.clone());
                    }
                }
            }
            "delivery" => {
                let rejected = v.get("outcome").and_then(|x| x.as_str()) == Some("rejected");
                let c = r.facilities.entry(signer.clone()).or_default();
                if rejected {
                    c.rejected += 1;
                    r.rejections.push((
                        env.clone(),
                        signer.clone(),
                        v.get("reason")
                            .and_then(|x| x.as_str())
                            .unwrap_or("")
                            .to_string(),
                    ));
                } else {
                    c.delivered += 1;
                }
                pending.remove(&(env.clone(), signer.clone()));
            }
            "expiry" => {
                let rec = v
                    .get("recipient")
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string();
                r.facilities.entry(rec.clone()).or_default().expired += 1;
                pending.remove(&(env.clone(), rec));
            }
            _ => {}
        }
    }
    for ((env, rec), at) in pending {
        let due = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .map(|t| t + time::Duration::days(DEADLINE_DAYS) < now)
            .unwrap_or(false);
        if due {
            r.overdue.push((env, rec, at));
        }
    }
    Ok(r)
}

impl Report {
    /// Plain text.
    pub fn to_text(&self) -> String {
        let mut s = String::from("facility       sent  received  delivered  rejected  expired\n");
        for (id, c) in &self.facilities {
            s.push_str(&format!(
                "{id:<12} {:>6} {:>9} {:>10} {:>9} {:>8}\n",
                c.sent, c.received, c.delivered, c.rejected, c.expired
            ));
        }
        s.push_str(&format!(
            "\noverdue (no outcome {DEADLINE_DAYS} days after submission): {}\n",
            self.overdue.len()
        ));
        for (e, r, at) in &self.overdue {
            s.push_str(&format!("  {e} → {r} (submitted {at})\n"));
        }
        s.push_str(&format!("rejections: {}\n", self.rejections.len()));
        for (e, r, why) in &self.rejections {
            s.push_str(&format!("  {e} rejected by {r}: {why}\n"));
        }
        s.push_str(&format!(
            "IDs that got a new key (check each with the facility): {}\n",
            self.key_changes.len()
        ));
        for k in &self.key_changes {
            s.push_str(&format!(
                "  {} leaf {} ({}): certificate {} (fingerprint {}) for other keys than leaf {} (fingerprint {})\n",
                k.facility_id,
                k.log_index,
                k.published_at,
                k.serial,
                k.fingerprint,
                k.previous_log_index,
                k.previous_fingerprint
            ));
        }
        s.push_str(&format!(
            "problems found in the relay's log: {}\n",
            self.problems.len()
        ));
        for (at, idx, what) in &self.problems {
            s.push_str(&format!(
                "  {at} leaf {}: {what}\n",
                idx.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
            ));
        }
        s
    }

    /// CSV, one line per facility, then overdue, rejections and problems.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "record,facility,sent,received,delivered,rejected,expired,envelope,detail\n",
        );
        for (id, c) in &self.facilities {
            s.push_str(&format!(
                "facility,{id},{},{},{},{},{},,\n",
                c.sent, c.received, c.delivered, c.rejected, c.expired
            ));
        }
        for (e, r, at) in &self.overdue {
            s.push_str(&format!("overdue,{r},,,,,,{e},{at}\n"));
        }
        for (e, r, why) in &self.rejections {
            s.push_str(&format!("rejection,{r},,,,,,{e},{why}\n"));
        }
        for k in &self.key_changes {
            s.push_str(&format!(
                "new-key,{},,,,,,,leaf {} certificate {} fingerprint {} (before: leaf {} fingerprint {})\n",
                k.facility_id,
                k.log_index,
                k.serial,
                k.fingerprint,
                k.previous_log_index,
                k.previous_fingerprint
            ));
        }
        for (_, idx, what) in &self.problems {
            s.push_str(&format!(
                "problem,,,,,,,{},\"{}\"\n",
                idx.map(|i| i.to_string()).unwrap_or_default(),
                what.replace('"', "'")
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Kind;
    use crate::pki::ca::Ca;
    use crate::profile::Profile;

    fn entry(pem: &str, id: &str) -> String {
        LogEntry::Certificate {
            facility_id: id.into(),
            certificate: pem.into(),
            published_at: "2026-12-01T00:00:00Z".into(),
        }
        .to_text()
    }

    #[test]
    fn a_new_key_for_an_id_is_listed_and_a_renewal_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::init(&tmp.path().join("ca"), "テスト CA", 30).unwrap();
        let issue = |dir: &str, id: &str| {
            let p = Profile::create(&tmp.path().join(dir), id, Kind::Clinic, "x", &[]).unwrap();
            let csr = std::fs::read(p.path(Profile::REQUEST)).unwrap();
            let req = crate::pki::request::parse(&csr).unwrap();
            (ca.issue(&req, 10).unwrap(), req)
        };
        let (first, req) = issue("a", "1311234569");
        let renewal = ca.issue(&req, 20).unwrap();
        let (other, _) = issue("b", "1317654323");
        for pem in [&first, &renewal] {
            ca.revoke(&CertInfo::parse_pem(pem.as_bytes(), "t").unwrap())
                .unwrap();
        }
        let (rekeyed, _) = issue("c", "1311234569");
        let entries: Vec<(u64, String)> = [
            (0, entry(&first, "1311234569")),
            (1, entry(&other, "1317654323")),
            (2, entry(&renewal, "1311234569")),
            (
                3,
                "{\"type\":\"crl\",\"crl_number\":\"1\",\"crl\":\"x\",\"published_at\":\"t\"}"
                    .into(),
            ),
            (4, entry(&rekeyed, "1311234569")),
            (5, entry(&renewal, "1311234569")),
        ]
        .into_iter()
        .collect();
        let k = key_changes(&entries);
        let fp = |pem: &str| {
            CertInfo::parse_pem(pem.as_bytes(), "t")
                .unwrap()
                .fingerprint
        };
        assert_eq!(k.len(), 1, "{k:?}");
        assert_eq!(k[0].facility_id, "1311234569");
        assert_eq!(k[0].log_index, 4);
        assert_eq!(k[0].fingerprint, fp(&rekeyed));
        assert_eq!(k[0].previous_log_index, 2);
        assert_eq!(k[0].previous_fingerprint, fp(&renewal));
        let r = Report {
            key_changes: k,
            ..Default::default()
        };
        assert!(r.to_text().contains(
            "IDs that got a new key (check each with the facility): 1\n  1311234569 leaf 4"
        ));
        assert!(r.to_csv().contains("new-key,1311234569,"));
    }
}
