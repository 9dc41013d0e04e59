//! `renkei audit`: follow the relay's log and check receipts (auditor profile).

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Subcommand;

use super::{read, verify_failure, Conn, Failure};

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Fetch new log entries, verify every receipt and the new checkpoint's consistency with the last one.
    Sync {
        #[command(flatten)]
        conn: Conn,
        /// Re-download and re-verify the whole log, comparing it with what was verified before.
        #[arg(long)]
        full: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The chain of custody of one envelope.
    Envelope {
        #[command(flatten)]
        conn: Conn,
        /// The envelope ID.
        envelope: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Counts per facility, overdue envelopes, rejections, problems found.
    Report {
        #[command(flatten)]
        conn: Conn,
        /// Only receipts signed on or after this date (YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Compare this auditor's verified log with another auditor's audit.db (fork detection).
    Compare {
        #[command(flatten)]
        conn: Conn,
        /// The other auditor's audit.db.
        other: PathBuf,
    },
    /// Check a receipt bundle (.json) or its tlog-proof (.tlog-proof) offline with the relay's verifier key (and, for a bundle, the CA certificate).
    VerifyReceipt {
        /// The bundle or tlog-proof (from `renkei status --export DIR`).
        file: PathBuf,
        /// The region's CA certificate (needed for a JSON bundle).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The relay's verifier key (from `renkei relay vkey`), or a file holding it; for a .tlog-proof signed after a checkpoint key rotation, also that key (`relay vkey --checkpoint-key`): repeatable.
        #[arg(long = "relay-vkey", required = true)]
        relay_vkey: Vec<String>,
        /// A witness verifier key whose cosignature counts (repeatable).
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// Cosignatures of distinct known witnesses the checkpoint needs.
        #[arg(long = "witness-quorum", default_value_t = 0)]
        witness_quorum: usize,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReportFormat {
    Text,
    Json,
    Csv,
}

pub(crate) fn audit_failure(e: renkei::audit::sync::AuditError) -> Failure {
    match e {
        renkei::audit::sync::AuditError::Misbehaviour(_) => verify_failure(e),
        other => Failure::from(other),
    }
}

pub(crate) async fn audit(c: AuditCommand) -> Result<(), Failure> {
    use renkei::audit::sync::Auditor;
    match c {
        AuditCommand::Sync { conn, full, json } => {
            let a = Auditor::open(&conn.profile, conn.relay.as_deref())
                .await
                .map_err(audit_failure)?;
            let r = a.sync(full).await.map_err(audit_failure)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "log verified: size {} → {}, {} entries checked ({} receipt signatures in {:.3} s{}), checkpoint consistent with the last accepted one",
                    r.from_size,
                    r.to_size,
                    r.entries_verified,
                    r.receipts_verified,
                    r.verify_seconds,
                    if r.verify_seconds > 0.0 { format!(", {:.0} receipts/s", r.receipts_verified as f64 / r.verify_seconds) } else { String::new() }
                );
            }
        }
        AuditCommand::Envelope {
            conn,
            envelope,
            json,
        } => {
            let a = Auditor::open(&conn.profile, conn.relay.as_deref())
                .await
                .map_err(audit_failure)?;
            let rows = a.envelope(&envelope).await.map_err(audit_failure)?;
            if rows.is_empty() {
                return Err(anyhow!(
                    "no verified receipt for {envelope}; run `renkei audit sync` first"
                )
                .into());
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(i, p, s, b)| serde_json::json!({"log_index": i, "purpose": p, "signer": s, "body": serde_json::from_str::<serde_json::Value>(b).unwrap_or_default(), "signature": "verified", "inclusion": "verified against the accepted checkpoint"}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("chain of custody of {envelope} (every signature verified, every entry in the verified tree):");
                for (i, p, s, b) in &rows {
                    let v: serde_json::Value = serde_json::from_str(b).unwrap_or_default();
                    let when = ["submitted_at", "accepted_at", "delivered_at", "expired_at"]
                        .iter()
                        .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
                        .unwrap_or("-");
                    let extra = match p.as_str() {
                        "submission" => format!(
                            "by {s} to {}",
                            v.get("recipients")
                                .map(|r| r.to_string())
                                .unwrap_or_default()
                        ),
                        "acceptance" => format!("stored by relay {s}"),
                        "delivery" => format!(
                            "by {s}: {}{}",
                            v.get("outcome").and_then(|x| x.as_str()).unwrap_or("?"),
                            v.get("reason")
                                .and_then(|x| x.as_str())
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        ),
                        "expiry" => format!(
                            "relay {s} gave up waiting for {}",
                            v.get("recipient").and_then(|x| x.as_str()).unwrap_or("?")
                        ),
                        _ => String::new(),
                    };
                    println!("  [{i:>6}] {p:<10} {when}  {extra}");
                }
            }
        }
        AuditCommand::Report {
            conn,
            since,
            format,
        } => {
            let a = Auditor::open(&conn.profile, conn.relay.as_deref())
                .await
                .map_err(audit_failure)?;
            let report = renkei::audit::report::build(&a, since.as_deref())
                .await
                .map_err(audit_failure)?;
            match format {
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                ReportFormat::Csv => print!("{}", report.to_csv()),
                ReportFormat::Text => print!("{}", report.to_text()),
            }
            if !report.problems.is_empty() {
                return Err(verify_failure(anyhow!(
                    "{} problems found in the relay's log",
                    report.problems.len()
                )));
            }
        }
        AuditCommand::Compare { conn, other } => {
            renkei::audit::sync::compare_dbs(&conn.profile.join("audit.db"), &other)
                .await
                .map_err(audit_failure)?;
            println!("the two auditors saw the same log (no fork)");
        }
        AuditCommand::VerifyReceipt {
            file,
            ca,
            relay_vkey,
            witnesses,
            witness_quorum,
        } => {
            use renkei::receipt::bundle;
            let mut vkeys = Vec::new();
            for v in relay_vkey {
                vkeys.push(if Path::new(&v).is_file() {
                    String::from_utf8(read(Path::new(&v))?)?
                } else {
                    v
                });
            }
            let mut logs = Vec::new();
            for v in &vkeys {
                logs.push(
                    renkei::log::Verifier::parse(v.trim())
                        .map_err(|e| anyhow!("--relay-vkey: bad verifier key: {e}"))?,
                );
            }
            let policy = renkei::profile::WitnessPolicy {
                keys: witnesses,
                quorum: witness_quorum,
            };
            let (witnesses, quorum) = policy.parsed().map_err(anyhow::Error::from)?;
            let bytes = read(&file)?;
            let fail = |e: bundle::BundleError| verify_failure(anyhow!(e));
            let cosigned_by = |w: &[(String, u64)]| {
                if w.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = w.iter().map(|(n, _)| n.as_str()).collect();
                    format!(", cosigned by {}", names.join(", "))
                }
            };
            if bytes.starts_with(format!("{}\n", renkei::log::proof::HEADER).as_bytes()) {
                let p =
                    bundle::verify_tlog_proof(&bytes, &logs, &witnesses, quorum).map_err(fail)?;
                println!(
                    "OK: the log holds the {} receipt signed by {} at index {}, included in the relay's checkpoint of size {}{} (the receipt's signature is checked with its JSON bundle)",
                    p.receipt.purpose.as_str(),
                    p.signer,
                    p.log_index,
                    p.cosigned.checkpoint.size,
                    cosigned_by(&p.cosigned.witnesses)
                );
                return Ok(());
            }
            let ca = ca.ok_or_else(|| {
                anyhow!("a JSON receipt bundle needs --ca (the region's CA certificate)")
            })?;
            if logs.len() > 1 {
                return Err(anyhow!("a JSON receipt bundle is checked with one --relay-vkey: the relay certificate's (its key transitions lead to the rest)").into());
            }
            let v = renkei::audit::sync::verify_receipt_file(&bytes, &read(&ca)?, &vkeys[0])
                .map_err(|e| verify_failure(anyhow!(e)))?;
            let b: renkei::receipt::ReceiptBundle = serde_json::from_slice(&bytes)?;
            let w = bundle::check_witnesses(&b, &logs[0], &witnesses, quorum).map_err(fail)?;
            println!(
                "OK: receipt signed by {} ({}), included in the relay's checkpoint of size {} signed by {}{}",
                v.signer.id,
                v.signer.name,
                v.checkpoint.size,
                v.relay.id,
                cosigned_by(&w)
            );
        }
    }
    Ok(())
}
