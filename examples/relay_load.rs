//! Benchmark helper (bench/relay-load.sh): a load generator for running
//! relays.
//!
//!   relay_load setup OUT
//!   relay_load run OUT URL[,URL...] [CLIENTS] [SECONDS] [SIZE] [--nginx] [--keep-alive] [--once]
//!
//! `setup` creates a region under OUT with the library (a CA, a relay
//! profile `relay-1` for `localhost`, a clinic, a hospital and an auditor):
//! OUT/{ca,relay,clinic,hospital,auditor}, and OUT/relay/tls-key.pem, the
//! relay's key as PKCS#8 PEM for the peer server (nginx) that presents the
//! relay's certificate in the comparison.
//!
//! `--nginx`: the same bodies, sealed and signed the same way, are sent as
//! plain `PUT /upload/<envelope ID>` to a peer HTTPS server (nginx with
//! `ssl_verify_client on` against the same CA, writing request bodies to
//! disk), with the same client stack (`RelayClient`, rustls, hyper), the
//! same certificates, concurrency and connection policy; a `201`/`204` is
//! a success.
//!
//! `--keep-alive`: each client keeps one connection open and sends its
//! uploads on it one after the other (reconnecting when the server closes
//! it); default: one new connection per upload, like `renkei send`.
//!
//! `--once`: one client uploads one envelope of about SIZE bytes once (the
//! 1 GiB comparison); MiB/s is what to read.
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
    // The relay's key for the peer server (nginx presents the relay's
    // certificate, so the same client accepts it).
    let relay = Profile::open(&d("relay")).expect("relay profile");
    let key = relay.signing_key().expect("relay key");
    renkei::keys::write_secret_file(
        &d("relay").join("tls-key.pem"),
        key.to_pkcs8_pem().as_bytes(),
    )
    .expect("tls-key.pem");
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

/// How uploads are sent.
#[derive(Clone, Copy)]
struct Mode {
    nginx: bool,
    keep_alive: bool,
}

/// A client's connection(s) to the server under test.
struct Conn {
    client: RelayClient,
    open: Option<renkei::client::http::Connection>,
    keep_alive: bool,
}

impl Conn {
    /// One request: on the kept connection (opening it if needed), or on a
    /// fresh one.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(u16, bytes::Bytes, CertInfo), String> {
        let body = renkei::client::http::full(body);
        let resp = if self.keep_alive {
            if self.open.as_ref().is_none_or(|c| c.is_closed()) {
                self.open = Some(self.client.connect().await.map_err(|e| e.to_string())?);
            }
            let c = self.open.as_mut().expect("opened");
            match c.send(method, path, headers, body).await {
                Ok(r) => r,
                Err(e) => {
                    self.open = None;
                    return Err(e.to_string());
                }
            }
        } else {
            self.client
                .send(method, path, headers, body)
                .await
                .map_err(|e| e.to_string())?
        };
        let status = resp.status.as_u16();
        let relay = resp.relay.clone();
        let body = http_body_util::BodyExt::collect(resp.body)
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body, relay))
    }
}

/// Upload one sealed package and check the answer: the relay's fresh,
/// valid acceptance (or, for nginx, 201/204).
async fn submit(
    conn: &mut Conn,
    mode: Mode,
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
    if mode.nginx {
        let (status, body, _) = conn
            .send(
                Method::PUT,
                &format!("/upload/{envelope_id}"),
                &headers,
                ciphertext,
            )
            .await?;
        return match status {
            201 | 204 => Ok(()),
            s => Err(format!(
                "nginx answered {s}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )),
        };
    }
    let (status, body, relay) = conn
        .send(Method::POST, "/v1/envelopes", &headers, ciphertext)
        .await?;
    if status != 201 {
        return Err(format!(
            "the relay answered {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        ));
    }
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

async fn run(
    out: PathBuf,
    urls: Vec<String>,
    clients: usize,
    seconds: u64,
    size: usize,
    mode: Mode,
    once: bool,
) {
    let clinic = Arc::new(Facility::open(&out.join("clinic"), HOSPITAL));
    let hospital = Arc::new(Facility::open(&out.join("hospital"), CLINIC));
    // Both facilities publish their certificates (the auditor verifies
    // every receipt against the certificates the log published).
    for f in [&clinic, &hospital] {
        if mode.nginx {
            break;
        }
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
    if once {
        return run_once(&clinic, &hospital, &urls[0], size, mode).await;
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
            let mut conn = Conn {
                client,
                open: None,
                keep_alive: mode.keep_alive,
            };
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
                    submit(&mut conn, mode, &from, &to.cert, ct, &id),
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
        "target": if mode.nginx { "nginx" } else { "relay" },
        "keep_alive": mode.keep_alive,
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

/// One upload of about `size` bytes, timed (the 1 GiB comparison).
async fn run_once(from: &Facility, to: &Facility, url: &str, size: usize, mode: Mode) {
    let mut attachment = vec![0u8; size.saturating_sub(16 * 1024).max(512)];
    ring::rand::SystemRandom::new()
        .fill(&mut attachment)
        .expect("random");
    let t_seal = Instant::now();
    let (ct, id) = seal(from, &to.cert, &attachment);
    drop(attachment);
    let seal_secs = t_seal.elapsed().as_secs_f64();
    let n = ct.len();
    let mut conn = Conn {
        client: RelayClient::new(&from.profile, Some(url)).expect("client"),
        open: None,
        keep_alive: false,
    };
    let t0 = Instant::now();
    let r = submit(&mut conn, mode, from, &to.cert, ct, &id).await;
    let secs = t0.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "target": if mode.nginx { "nginx" } else { "relay" },
        "bytes": n,
        "seconds": secs,
        "seal_seconds": seal_secs,
        "mib_per_second": n as f64 / secs / (1024.0 * 1024.0),
        "errors": usize::from(r.is_err()),
        "error_samples": r.err().into_iter().collect::<Vec<_>>(),
    });
    println!("{report}");
}

fn main() {
    let usage = "usage: relay_load setup OUT | relay_load run OUT URL[,URL...] [CLIENTS] [SECONDS] [SIZE] [--nginx] [--keep-alive] [--once]";
    let all: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| all.iter().any(|a| a == f);
    let mode = Mode {
        nginx: flag("--nginx"),
        keep_alive: flag("--keep-alive"),
    };
    let once = flag("--once");
    let args: Vec<String> = all
        .iter()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .collect();
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
                .block_on(run(out, urls, clients, seconds, size as usize, mode, once));
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
