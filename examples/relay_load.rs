//! Benchmark helper (bench/relay-load.sh): a load generator for running
//! relays.
//!
//!   relay_load setup OUT
//!   relay_load run OUT URL[,URL...] [CLIENTS] [SECONDS] [SIZE]
//!
//! `setup` creates a region under OUT with the library (a CA, a relay
//! profile `relay-1` for `localhost`, a clinic, a hospital and an auditor):
//! OUT/{ca,relay,clinic,hospital,auditor}.
//!
//! `run` publishes the clinic's and the hospital's certificates to the first
//! relay, then starts CLIENTS concurrent clients (default 32), client `i`
//! talking to URL number `i mod n`. For SECONDS (default 60) each client
//! loops: seal a package (a valid JP-CLINS referral built from
//! examples/referral.toml and one random attachment, sized so the
//! ciphertext is about SIZE bytes, default 65536) from the
//! clinic to the hospital or the other way round, sign the submission, and
//! upload it (`POST /v1/envelopes`, one new mutual-TLS connection per
//! upload, as `renkei send` does). Sealing happens in the loop but outside
//! the timed part; the latency of one submission runs from opening the
//! connection to the relay's acceptance receipt being checked against the
//! relay certificate's key. Any refusal, transport failure, bad acceptance
//! or an upload slower than 60 s counts as an error. Prints one JSON object.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::Method;
use ring::rand::SecureRandom as _;

use renkei::api::{SubmitResponse, SUBMISSION_HEADER};
use renkei::client::RelayClient;
use renkei::document::form::AttachmentForm;
use renkei::document::{build_json, BuildOptions, DocKind, Form};
use renkei::identity::Kind;
use renkei::keys::SigningKey;
use renkei::package::{self, Limits, MemberSource, PackageKind, SealRequest};
use renkei::pki::ca::Ca;
use renkei::pki::CertInfo;
use renkei::profile::Profile;
use renkei::receipt::{self, Acceptance, Purpose, SignedReceipt, Submission};

const CLINIC: &str = "1311234569";
const HOSPITAL: &str = "1317654323";
/// The attachment's member name.
const ATTACHMENT: &str = "scan.bin";
/// Bound on one upload; slower counts as an error.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

fn profile(ca: &Ca, crl: &str, dir: &Path, id: &str, kind: Kind, name: &str) {
    let dns: Vec<String> = if kind == Kind::Relay {
        vec!["localhost".into()]
    } else {
        Vec::new()
    };
    let mut p = Profile::create(dir, id, kind, name, &dns).expect("profile");
    let csr = std::fs::read(p.path(Profile::REQUEST)).expect("request");
    let req = renkei::pki::request::parse(&csr).expect("request parses");
    let cert = ca.issue(&req, 730).expect("issue");
    p.install(
        Some(cert.as_bytes()),
        Some(ca.cert_pem().as_bytes()),
        Some(crl.as_bytes()),
        None,
    )
    .expect("install");
}

fn setup(out: &Path) {
    std::fs::create_dir_all(out).expect("mkdir");
    let ca = Ca::init(
        &out.join("ca"),
        "負荷試験 地域医療連携ネットワーク CA",
        3650,
    )
    .expect("ca");
    let crl = ca.crl(30).expect("crl");
    let d = |n: &str| out.join(n);
    profile(
        &ca,
        &crl,
        &d("relay"),
        "relay-1",
        Kind::Relay,
        "負荷試験 中継",
    );
    profile(
        &ca,
        &crl,
        &d("clinic"),
        CLINIC,
        Kind::Clinic,
        "負荷試験 内科",
    );
    profile(
        &ca,
        &crl,
        &d("hospital"),
        HOSPITAL,
        Kind::Hospital,
        "負荷試験 病院",
    );
    profile(
        &ca,
        &crl,
        &d("auditor"),
        "audit-1",
        Kind::Auditor,
        "負荷試験 監査人",
    );
    println!("region ready in {}", out.display());
}

/// One facility as a sender, with the referral it sends to its peer.
struct Facility {
    profile: Profile,
    cert: CertInfo,
    key: SigningKey,
    /// A valid JP-CLINS referral (sealing validates it against the package).
    document: Vec<u8>,
}

impl Facility {
    fn open(dir: &Path, to: &str) -> Facility {
        let profile = Profile::open(dir).expect("profile");
        let cert = profile.certificate().expect("certificate");
        let key = profile.signing_key().expect("key");
        let document = referral(&cert.id.to_string(), to);
        Facility {
            profile,
            cert,
            key,
            document,
        }
    }
}

/// The example referral form (examples/referral.toml) from `from` to `to`,
/// naming the one attachment.
fn referral(from: &str, to: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/referral.toml");
    let text = std::fs::read_to_string(path).expect("examples/referral.toml");
    let mut form = Form::from_toml(&text).expect("example form");
    form.from.facility_id = from.parse().expect("sender ID");
    let mut dest = form.to.take().unwrap_or_else(|| form.from.clone());
    dest.facility_id = to.parse().expect("recipient ID");
    form.to = Some(dest);
    form.attachments = vec![AttachmentForm {
        file: ATTACHMENT.into(),
        title: "検査画像".into(),
    }];
    form.in_reply_to = None;
    build_json(DocKind::Referral, &form, &BuildOptions::default()).expect("referral document")
}

/// Seal one package; returns (ciphertext, envelope ID).
fn seal(from: &Facility, to: &CertInfo, attachment: &[u8]) -> (Vec<u8>, String) {
    let mut out = Vec::with_capacity(attachment.len() + 8192);
    let sealed = package::seal(
        SealRequest {
            sender_key: &from.key,
            sender_cert: &from.cert,
            sender_copy: true,
            recipients: std::slice::from_ref(to),
            kind: PackageKind::Referral,
            thread_id: None,
            in_reply_to: None,
            document: MemberSource {
                path: package::DOCUMENT_PATH.into(),
                media_type: "application/fhir+json".into(),
                size: from.document.len() as u64,
                reader: Box::new(from.document.as_slice()),
            },
            attachments: vec![MemberSource {
                path: format!("{}/{ATTACHMENT}", package::ATTACHMENTS_DIR),
                media_type: "application/octet-stream".into(),
                size: attachment.len() as u64,
                reader: Box::new(attachment),
            }],
            limits: Limits::default(),
        },
        &mut out,
    )
    .expect("seal");
    (out, hex::encode(sealed.envelope_id))
}

/// Upload one sealed package and check the acceptance.
async fn submit(
    client: &RelayClient,
    from: &Facility,
    to: &CertInfo,
    ciphertext: Vec<u8>,
    envelope_id: &str,
) -> Result<(), String> {
    let sub = Submission {
        envelope_id: envelope_id.to_string(),
        size: ciphertext.len() as u64,
        sender: from.cert.facility_id().map_err(|e| e.to_string())?.clone(),
        sender_cert_sha256: from.cert.fingerprint.clone(),
        recipients: vec![to.facility_id().map_err(|e| e.to_string())?.clone()],
        submitted_at: receipt::now_rfc3339(),
    };
    let signed = SignedReceipt::sign(Purpose::Submission, &sub, &from.key);
    let header = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&signed).map_err(|e| e.to_string())?);
    let headers = [
        (SUBMISSION_HEADER, header),
        ("content-type", "application/octet-stream".to_string()),
    ];
    let (_, body, relay) = client
        .call(Method::POST, "/v1/envelopes", &headers, ciphertext)
        .await
        .map_err(|e| e.to_string())?;
    let resp: SubmitResponse = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    resp.acceptance
        .verify(&relay.signing_key)
        .map_err(|_| "acceptance not signed by the relay certificate's key".to_string())?;
    let acc: Acceptance = resp
        .acceptance
        .parse(Purpose::Acceptance)
        .map_err(|e| e.to_string())?;
    if !resp.created || acc.envelope_id != envelope_id {
        return Err("acceptance for another or an older submission".into());
    }
    if acc.submission_sha256 != signed.body_sha256() {
        return Err("acceptance does not refer to this submission".into());
    }
    Ok(())
}

/// Attachment size giving a ciphertext of at most `size` bytes and less
/// than 1 KiB below it (tar pads members to 512 bytes).
fn calibrate(f: &Facility, to: &CertInfo, size: usize) -> usize {
    let probe = (size.saturating_sub(8192) / 512 * 512).max(512);
    let (ct, _) = seal(f, to, &vec![0u8; probe]);
    let overhead = ct.len() - probe;
    (size.saturating_sub(overhead) / 512 * 512).max(512)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run(out: PathBuf, urls: Vec<String>, clients: usize, seconds: u64, size: usize) {
    let clinic = Arc::new(Facility::open(&out.join("clinic"), HOSPITAL));
    let hospital = Arc::new(Facility::open(&out.join("hospital"), CLINIC));
    // Both facilities publish their certificates (the auditor verifies
    // every receipt against the certificates the log published).
    for f in [&clinic, &hospital] {
        let c = RelayClient::new(&f.profile, Some(&urls[0])).expect("client");
        c.call(
            Method::POST,
            "/v1/directory",
            &[],
            f.cert.pem().into_bytes(),
        )
        .await
        .expect("publish certificate");
    }
    let attachment_len = calibrate(&clinic, &hospital.cert, size);
    let mut attachment = vec![0u8; attachment_len];
    ring::rand::SystemRandom::new()
        .fill(&mut attachment)
        .expect("random");
    let attachment: Arc<[u8]> = attachment.into();

    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (from, to) = if i % 2 == 0 {
            (clinic.clone(), hospital.clone())
        } else {
            (hospital.clone(), clinic.clone())
        };
        let url = urls[i % urls.len()].clone();
        let attachment = attachment.clone();
        tasks.push(tokio::spawn(async move {
            let client = RelayClient::new(&from.profile, Some(&url)).expect("client");
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let mut bytes = 0u64;
            while Instant::now() < deadline {
                let (ct, id) = {
                    let (from, to, a) = (from.clone(), to.clone(), attachment.clone());
                    tokio::task::spawn_blocking(move || seal(&from, &to.cert, &a))
                        .await
                        .expect("seal task")
                };
                let n = ct.len() as u64;
                let t0 = Instant::now();
                match tokio::time::timeout(
                    UPLOAD_TIMEOUT,
                    submit(&client, &from, &to.cert, ct, &id),
                )
                .await
                {
                    Ok(Ok(())) => {
                        latencies.push(t0.elapsed().as_secs_f64());
                        bytes += n;
                    }
                    Ok(Err(e)) => errors.push(e),
                    Err(_) => errors.push("upload timed out (60 s)".into()),
                }
            }
            (latencies, errors, bytes)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut bytes = 0u64;
    for t in tasks {
        let (l, e, b) = t.await.expect("client task");
        latencies.extend(l);
        errors.extend(e);
        bytes += b;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let ok = latencies.len();
    let mut samples = errors.clone();
    samples.sort();
    samples.dedup();
    samples.truncate(5);
    let report = serde_json::json!({
        "relays": urls,
        "clients": clients,
        "seconds": elapsed,
        "submissions": ok,
        "errors": errors.len(),
        "error_samples": samples,
        "per_second": ok as f64 / elapsed,
        "mib_per_second": bytes as f64 / elapsed / (1024.0 * 1024.0),
        "mean_ciphertext_bytes": if ok > 0 { bytes / ok as u64 } else { 0 },
        "p50_ms": percentile(&latencies, 50.0) * 1e3,
        "p99_ms": percentile(&latencies, 99.0) * 1e3,
        "max_ms": latencies.last().copied().unwrap_or(0.0) * 1e3,
    });
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{report}").expect("stdout");
}

fn main() {
    let usage =
        "usage: relay_load setup OUT | relay_load run OUT URL[,URL...] [CLIENTS] [SECONDS] [SIZE]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("setup") if args.len() == 2 => setup(Path::new(&args[1])),
        Some("run") if (3..=6).contains(&args.len()) => {
            let out = PathBuf::from(&args[1]);
            let urls: Vec<String> = args[2].split(',').map(str::to_string).collect();
            let num = |i: usize, d: u64| -> u64 {
                args.get(i).map(|s| s.parse().expect(usage)).unwrap_or(d)
            };
            let (clients, seconds, size) = (num(3, 32) as usize, num(4, 60), num(5, 65536));
            assert!(clients > 0 && size > 0, "{usage}");
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(run(out, urls, clients, seconds, size as usize));
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
