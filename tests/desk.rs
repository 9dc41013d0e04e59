//! The liaison office's desk (`renkei desk`) in a real browser: headless
//! Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, which `scripts/test` installs), against desks served
//! in this process for a clinic and a hospital, over a real relay (mutual
//! TLS, SQLite) — and the desk's security checks over plain HTTP.
//!
//! With `RENKEI_DESK_SCREENSHOTS=DIR` the main screens are saved as PNG
//! files into DIR (docs/desk/ holds the ones docs/DESK.md shows).

mod relay_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use relay_support::*;
use renkei::desk::{DeskOptions, RunningDesk};
use renkei::document::DocKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// --- the desks ----------------------------------------------------------------

struct Desk {
    running: RunningDesk,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Desk {
    async fn start(profile: &Path, relay: &str, idle: Duration) -> Desk {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let opts = DeskOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_non_loopback: false,
            // Syncs happen when the test presses 今すぐ同期 (and once at start).
            sync_interval: Duration::from_secs(3600),
            idle_lock: idle,
            overdue_days: 14,
            relay: Some(relay.to_string()),
        };
        let running = renkei::desk::start(profile, opts, async {
            let _ = rx.await;
        })
        .await
        .expect("the desk starts");
        Desk {
            running,
            stop: Some(tx),
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.running.addr)
    }
}

impl Drop for Desk {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn publish_all(w: &World) {
    for p in [&w.clinic, &w.hospital, &w.recovery] {
        bounded(w.session(p).await.publish()).await.unwrap();
    }
}

// --- the browser ----------------------------------------------------------------

struct Browser {
    driver: Child,
    client: Client,
    downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
    shots: Option<PathBuf>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let downloads = tempfile::tempdir().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                },
            }
        });
        let caps = caps.as_object().unwrap().clone().into_iter().collect();
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session in headless Chromium");
        let shots = std::env::var_os("RENKEI_DESK_SCREENSHOTS").map(PathBuf::from);
        Browser {
            driver,
            client,
            downloads,
            _profile: profile,
            shots,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The page's text (empty while a navigation replaces the page).
    async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        e.clear().await.ok();
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type {css}: {e}"));
    }

    /// Wait until the page shows `text` (bounded).
    async fn wait_text(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = self.text().await;
            if body.contains(text) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {text:?}:\n{body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn shot(&self, name: &str) {
        if let Some(dir) = &self.shots {
            self.client
                .execute("window.scrollTo(0, 0);", vec![])
                .await
                .ok();
            std::fs::create_dir_all(dir).unwrap();
            let png = self.client.screenshot().await.expect("screenshot");
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    /// Press 今すぐ同期 and wait until the sync succeeded.
    ///
    /// The page before the click may already say 同期し… (an empty inbox
    /// says it syncs by itself, an earlier sync left its message), so the
    /// old page is marked and only the page that replaced it is read.
    async fn sync(&self) {
        self.client
            .execute("window.renkeiBeforeSync = true;", vec![])
            .await
            .expect("mark the page");
        self.click("form[action='/sync'] button").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let flash = self
                .client
                .execute(
                    "if (window.renkeiBeforeSync === true || document.readyState !== 'complete') \
                     { return null; } \
                     const f = document.querySelector('.flash'); return f ? f.textContent : '';",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
            if let Some(flash) = flash {
                let page = self.text().await;
                assert!(
                    flash.contains("同期しました"),
                    "the sync failed: {flash:?}\n{page}"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sync never answered:\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

// --- the round trip ----------------------------------------------------------------

/// Fill the compose form's patient and doctor fields.
async fn fill_patient_and_doctor(b: &Browser, patient: (&str, &str, &str, &str)) {
    b.type_into("#family", patient.0).await;
    b.type_into("#given", patient.1).await;
    b.type_into("#family_kana", patient.2).await;
    b.type_into("#given_kana", patient.3).await;
    b.client
        .execute(
            "document.getElementById('birth_date').value = '1954-03-18'; \
             document.getElementById('birth_date').dispatchEvent(new Event('input'));",
            vec![],
        )
        .await
        .unwrap();
    b.click("input[name=sex][value=male]").await;
    b.type_into("#doctor_family", "佐藤").await;
    b.type_into("#doctor_given", "花子").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    renkei_no_chromium,
    ignore = "needs Chromium and its WebDriver (`/usr/bin/chromium`, `chromedriver`: apt-get install chromium chromium-driver, as scripts/test does); build.rs did not find them"
)]
async fn a_referral_reply_and_receipts_through_two_desks_in_the_browser() {
    let w = World::start(Backend::Sqlite).await;
    publish_all(&w).await;
    let clinic = Desk::start(&w.clinic, &w.relay.url, Duration::from_secs(1800)).await;
    let hospital = Desk::start(&w.hospital, &w.relay.url, Duration::from_secs(1800)).await;
    let b = Browser::start().await;
    let lab = b"item,value,unit\nHbA1c,7.2,%\nLDL,142,mg/dL\n".repeat(200);
    let lab_file = w.file("lab-result.csv", &lab);

    // The clinic writes a referral with an attachment.
    b.goto(&clinic.running.url).await;
    let inbox = b.wait_text("受信箱").await;
    assert!(inbox.contains("さくら内科クリニック"), "{inbox}");
    b.sync().await;
    b.goto(&format!("{}/compose?kind=referral", clinic.base()))
        .await;
    b.wait_text("宛先（紹介先）").await;
    b.client
        .find(Locator::Css("#to_id"))
        .await
        .unwrap()
        .select_by_value(HOSPITAL)
        .await
        .expect("the hospital is among the verified addressees");
    let fp = b.text().await;
    assert!(
        fp.contains(&cert_of(&w.hospital).fingerprint),
        "the addressee's certificate fingerprint is shown"
    );
    b.type_into("#to_department", "循環器内科").await;
    fill_patient_and_doctor(&b, ("山田", "太郎", "ヤマダ", "タロウ")).await;
    let wareki = b
        .client
        .find(Locator::Css("[data-wareki-of=birth_date]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(wareki, "1954年3月18日（昭和29年3月18日）");
    b.type_into("#purpose", "労作性狭心症の精査をお願いいたします。")
        .await;
    b.type_into("#diagnoses", "労作性狭心症の疑い\n高血圧症")
        .await;
    b.type_into("#present_illness", "4月より労作時の胸部圧迫感があります。")
        .await;
    b.client
        .find(Locator::Css("#attachments"))
        .await
        .unwrap()
        .send_keys(&lab_file.display().to_string())
        .await
        .unwrap();
    b.shot("compose").await;
    b.click("button.primary").await;
    let confirm = b.wait_text("送信前の確認").await;
    assert!(
        confirm.contains("市立中央病院"),
        "the addressee is repeated: {confirm}"
    );
    assert!(confirm.contains("山田 太郎"), "the patient is repeated");
    assert!(confirm.contains("1954年3月18日（昭和29年3月18日）"));
    assert!(confirm.contains("lab-result.csv"));
    b.shot("confirm").await;
    b.click("input[name=confirmed]").await;
    b.click("button.primary").await;
    let sent = b.wait_text("送信しました").await;
    assert!(sent.contains("中継サーバー受付済み"), "{sent}");

    // The hospital sees it in its inbox, opens it, downloads the attachment.
    b.goto(&hospital.running.url).await;
    b.sync().await;
    let inbox = b.wait_text("山田 太郎").await;
    assert!(inbox.contains("未読 1 件"), "{inbox}");
    let title = b.client.title().await.unwrap();
    assert!(
        title.starts_with("(1) "),
        "the tab title carries the badge: {title}"
    );
    b.shot("inbox").await;
    b.click("tr.unread button").await;
    let page = b.wait_text("送信元の署名を確認済み").await;
    assert!(
        page.contains(&cert_of(&w.clinic).fingerprint),
        "who signed it"
    );
    assert!(page.contains("労作性狭心症の精査"));
    b.shot("package").await;
    b.click("a.download").await;
    let got = b.downloads.path().join("lab-result.csv");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read(&got).map(|g| g != lab).unwrap_or(true) {
        assert!(
            Instant::now() < deadline,
            "the attachment was not downloaded intact"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The letter prints in the order of 別紙様式11.
    b.click("a[href$='/print']").await;
    let print = b.wait_text("印刷する（A4）").await;
    assert!(print.find("紹介目的").unwrap() < print.find("既往歴").unwrap_or(usize::MAX));
    b.shot("print").await;
    b.client.back().await.unwrap();

    // The hospital replies from the thread.
    b.goto(&format!("{}/threads", hospital.base())).await;
    b.wait_text("返書待ち").await;
    b.click("a.card").await;
    b.wait_text("返書を作成").await;
    b.click("a.button[href*='kind=reply']").await;
    b.wait_text("受信した文書").await;
    let family = b
        .client
        .find(Locator::Css("#family"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(family.as_deref(), Some("山田"), "the patient is pre-filled");
    let to = b
        .client
        .find(Locator::Css("#to_id"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(
        to.as_deref(),
        Some(CLINIC),
        "the addressee is the referring clinic"
    );
    b.type_into("#doctor_family", "高橋").await;
    b.type_into("#doctor_given", "一郎").await;
    b.type_into(
        "#purpose",
        "ご紹介ありがとうございました。受診のご報告です。",
    )
    .await;
    b.type_into("#present_illness", "冠動脈CTで狭窄を認めました。")
        .await;
    b.click("button.primary").await;
    b.wait_text("送信前の確認").await;
    b.click("input[name=confirmed]").await;
    b.click("button.primary").await;
    b.wait_text("送信しました").await;

    // The clinic sees the reply and the delivered receipt of its referral.
    b.goto(&clinic.running.url).await;
    b.sync().await;
    b.goto(&format!("{}/threads", clinic.base())).await;
    let board = b.wait_text("山田 太郎").await;
    let column = b
        .client
        .find(Locator::XPath(
            "//section[contains(@class,'column')][.//a[contains(@class,'card')]]/h2",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(column.starts_with("返書受領"), "{column}\n{board}");
    b.shot("threads").await;
    b.goto(&format!("{}/sent", clinic.base())).await;
    let sent = b.wait_text("到達").await;
    assert!(sent.contains("署名付き受領通知"), "{sent}");
    b.shot("sent").await;
    b.goto(&format!("{}/stats", clinic.base())).await;
    b.wait_text("紹介率").await;
    b.shot("stats").await;
    b.goto(&format!("{}/settings", clinic.base())).await;
    b.wait_text("証明書のフィンガープリント").await;
    b.shot("settings").await;
    b.client.clone().close().await.ok();
}

/// A certificate for the clinic's own ID, issued with a stolen copy of
/// the CA and published by someone else, raises the red banner on the
/// clinic's desk after its next sync (directory self-monitoring).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    renkei_no_chromium,
    ignore = "needs Chromium and its WebDriver (`/usr/bin/chromium`, `chromedriver`: apt-get install chromium chromium-driver, as scripts/test does); build.rs did not find them"
)]
async fn a_certificate_in_the_clinics_name_that_it_never_published_raises_the_banner() {
    use renkei::identity::Kind;
    use renkei::profile::Profile;
    let w = World::start(Backend::Sqlite).await;
    publish_all(&w).await;
    let clinic = Desk::start(&w.clinic, &w.relay.url, Duration::from_secs(1800)).await;
    let b = Browser::start().await;
    b.goto(&clinic.running.url).await;
    b.sync().await;
    assert!(b
        .client
        .find(Locator::Css("[data-directory-alert]"))
        .await
        .is_err());

    let impostor = w.region.impostor(
        &w.region.stolen_ca(),
        CLINIC,
        Kind::Clinic,
        "さくら内科クリニック",
    );
    let cert = std::fs::read_to_string(impostor.join(Profile::CERT)).unwrap();
    bounded(w.session(&impostor).await.publish()).await.unwrap();

    b.sync().await;
    let page = b.wait_text("身に覚えのない証明書が公開されました").await;
    let serial = renkei::pki::CertInfo::parse_pem(cert.as_bytes(), "impostor")
        .unwrap()
        .serial;
    assert!(
        page.contains(&serial),
        "the banner names the serial:\n{page}"
    );
    assert!(page.contains("失効してもらってください"), "{page}");
    b.shot("directory-alert").await;
    b.client.clone().close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    renkei_no_chromium,
    ignore = "needs Chromium and its WebDriver (`/usr/bin/chromium`, `chromedriver`: apt-get install chromium chromium-driver, as scripts/test does); build.rs did not find them"
)]
async fn a_patient_name_that_is_html_is_shown_as_text() {
    let w = World::start(Backend::Sqlite).await;
    publish_all(&w).await;
    let evil = "<img src=x onerror=alert(1)>";
    let mut form = example_form(DocKind::Referral);
    form.patient.name = format!("{evil} 太郎");
    form.from.facility_id = CLINIC.parse().unwrap();
    form.to.as_mut().unwrap().facility_id = HOSPITAL.parse().unwrap();
    form.attachments.clear();
    let doc = renkei::document::build_json(DocKind::Referral, &form, &Default::default()).unwrap();
    let clinic = w.session(&w.clinic).await;
    bounded(clinic.send_members(
        &[HOSPITAL.parse().unwrap()],
        renkei::package::PackageKind::Referral,
        None,
        None,
        doc,
        Vec::new(),
        |_, _| {},
    ))
    .await
    .unwrap();
    let hospital = Desk::start(&w.hospital, &w.relay.url, Duration::from_secs(1800)).await;
    let b = Browser::start().await;
    b.goto(&hospital.running.url).await;
    b.sync().await;
    let inbox = b.wait_text(evil).await;
    assert!(inbox.contains(&format!("{evil} 太郎")));
    b.click("tr.unread button").await;
    let page = b.wait_text("送信元の署名を確認済み").await;
    assert!(page.contains(evil), "the name is text on the page");
    let imgs = b.client.find_all(Locator::Css("img")).await.unwrap();
    assert!(imgs.is_empty(), "no image element was injected");
    assert!(
        b.client.get_alert_text().await.is_err(),
        "no script ran (no alert is open)"
    );
    b.client.clone().close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    renkei_no_chromium,
    ignore = "needs Chromium and its WebDriver (`/usr/bin/chromium`, `chromedriver`: apt-get install chromium chromium-driver, as scripts/test does); build.rs did not find them"
)]
async fn a_validation_error_is_shown_beside_its_field_and_nothing_is_sent() {
    let w = World::start(Backend::Sqlite).await;
    publish_all(&w).await;
    let clinic = Desk::start(&w.clinic, &w.relay.url, Duration::from_secs(1800)).await;
    let b = Browser::start().await;
    b.goto(&clinic.running.url).await;
    b.sync().await;
    b.goto(&format!("{}/compose?kind=referral", clinic.base()))
        .await;
    b.wait_text("宛先（紹介先）").await;
    b.client
        .find(Locator::Css("#to_id"))
        .await
        .unwrap()
        .select_by_value(HOSPITAL)
        .await
        .unwrap();
    fill_patient_and_doctor(&b, ("鈴木", "花子", "スズキ", "ハナコ")).await;
    // No 紹介目的 and no 現病歴.
    b.click("button.primary").await;
    b.wait_text("入力を確認してください").await;
    let beside = b
        .client
        .find(Locator::XPath(
            "//textarea[@id='purpose']/following-sibling::p[contains(@class,'err')]",
        ))
        .await
        .expect("an error right below 紹介目的")
        .text()
        .await
        .unwrap();
    assert!(!beside.is_empty());
    let illness = b
        .client
        .find(Locator::XPath(
            "//textarea[@id='present_illness']/following-sibling::p[contains(@class,'err')]",
        ))
        .await
        .expect("an error right below 現病歴");
    assert!(!illness.text().await.unwrap().is_empty());
    // What was typed is still there.
    let family = b
        .client
        .find(Locator::Css("#family"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(family.as_deref(), Some("鈴木"));
    b.shot("compose-errors").await;
    // Nothing was sealed or sent.
    let s = w.session(&w.clinic).await;
    assert!(s.store.outbox(None).await.unwrap().is_empty());
    let h = w.session(&w.hospital).await;
    assert!(bounded(h.inbox()).await.unwrap().is_empty());
    b.client.clone().close().await.ok();
}

// --- security, over plain HTTP ----------------------------------------------------------

/// One raw HTTP/1.1 exchange with exact headers: (status, headers, body).
async fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get(path: &str, host: &str, cookie: Option<&str>) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{}Connection: close\r\n\r\n",
        cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default()
    )
}

fn post(path: &str, host: &str, cookie: &str, origin: Option<&str>, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n{}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default(),
        body.len()
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Log in with the token URL; returns the cookie ("name=value").
async fn login(d: &Desk) -> String {
    let addr = d.running.addr;
    let host = format!("127.0.0.1:{}", addr.port());
    let path_q = d.running.url.split_once(&host).unwrap().1.to_string();
    let (status, head, _) = http(addr, &get(&path_q, &host, None)).await;
    assert_eq!(status, 303, "{head}");
    assert_eq!(
        header(&head, "location"),
        Some("/"),
        "redirected without the token"
    );
    let set = header(&head, "set-cookie").expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        set.starts_with(&format!("renkei_desk_{}=", addr.port())),
        "{set}"
    );
    set.split(';').next().unwrap().to_string()
}

fn csrf_of(page: &str) -> String {
    let i = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("a form with a CSRF token in:\n{page}"));
    let rest = &page[i + 19..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_refuses_strangers_other_hosts_other_origins_and_forged_forms() {
    let w = World::start(Backend::Sqlite).await;
    publish_all(&w).await;
    let d = Desk::start(&w.clinic, &w.relay.url, Duration::from_secs(1800)).await;
    let addr = d.running.addr;
    let host = format!("127.0.0.1:{}", addr.port());
    assert!(d.running.url.contains("?token="));
    let token = d.running.url.split("?token=").nth(1).unwrap();
    assert!(token.len() >= 43, "at least 256 bits in base64url");

    // No token and no cookie: 401, with the security headers.
    let (status, head, body) = http(addr, &get("/", &host, None)).await;
    assert_eq!(status, 401, "{head}");
    assert!(body.contains("起動時のURL"), "{body}");
    let csp = header(&head, "content-security-policy").unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&head, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    // A wrong token: 401.
    let (status, _, _) = http(addr, &get("/?token=AAAA", &host, None)).await;
    assert_eq!(status, 401);

    let cookie = login(&d).await;
    let (status, head, page) = http(addr, &get("/", &host, Some(&cookie))).await;
    assert_eq!(status, 200, "{head}");
    assert!(header(&head, "access-control-allow-origin").is_none());
    // The token URL opens a second session too (a second tab, after a lock).
    let second = login(&d).await;
    assert_ne!(second, cookie);
    // Other Host headers (DNS rebinding): 403, even with a valid cookie.
    for bad in [
        "evil.example:80".to_string(),
        format!("evil.example:{}", addr.port()),
        format!("127.0.0.1:{}", addr.port() + 1),
    ] {
        let (status, _, _) = http(addr, &get("/", &bad, Some(&cookie))).await;
        assert_eq!(status, 403, "Host {bad}");
    }
    for ok in [
        format!("localhost:{}", addr.port()),
        format!("[::1]:{}", addr.port()),
    ] {
        let (status, _, _) = http(addr, &get("/", &ok, Some(&cookie))).await;
        assert_eq!(status, 200, "Host {ok}");
    }
    // Preflights are refused; no CORS headers anywhere.
    let (status, head, _) = http(
        addr,
        &format!("OPTIONS /sync HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(header(&head, "access-control-allow-origin").is_none());
    // A POST from another origin: 403.
    let csrf = csrf_of(&page);
    let own = format!("http://{host}");
    let (status, _, _) = http(
        addr,
        &post(
            "/sync",
            &host,
            &cookie,
            Some("http://evil.example"),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(status, 403, "cross-origin POST");
    // Without the CSRF token, or with another: 403.
    let (status, _, _) = http(addr, &post("/sync", &host, &cookie, Some(&own), "")).await;
    assert_eq!(status, 403, "missing CSRF token");
    let (status, _, _) = http(
        addr,
        &post("/sync", &host, &cookie, Some(&own), "csrf=nope"),
    )
    .await;
    assert_eq!(status, 403, "wrong CSRF token");
    // With both: the change happens (303 to the next page).
    let (status, head, _) = http(
        addr,
        &post("/sync", &host, &cookie, Some(&own), &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 303, "{head}");
    // A GET changes nothing: GET of a POST route is refused.
    let (status, _, _) = http(addr, &get("/sync", &host, Some(&cookie))).await;
    assert_eq!(status, 405);
    // No route returns key material.
    for path in ["/settings", "/api/badge", "/directory?q="] {
        let (status, _, body) = http(addr, &get(path, &host, Some(&cookie))).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !body.contains("PRIVATE KEY") && !body.contains("AGE-SECRET-KEY"),
            "{path}"
        );
    }

    // A non-loopback address is refused unless explicitly allowed.
    let opts = DeskOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        allow_non_loopback: false,
        sync_interval: Duration::from_secs(3600),
        idle_lock: Duration::from_secs(60),
        overdue_days: 14,
        relay: None,
    };
    let refused = renkei::desk::start(&w.clinic, opts, std::future::pending()).await;
    assert!(
        matches!(refused, Err(renkei::desk::DeskError::NotLoopback(_))),
        "{:?}",
        refused.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_locks_after_idle_time_and_the_printed_url_unlocks_it() {
    let w = World::start(Backend::Sqlite).await;
    publish_all(&w).await;
    let d = Desk::start(&w.clinic, &w.relay.url, Duration::from_secs(2)).await;
    let addr = d.running.addr;
    let host = format!("127.0.0.1:{}", addr.port());
    let cookie = login(&d).await;
    let (status, _, _) = http(addr, &get("/", &host, Some(&cookie))).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _, body) = http(addr, &get("/", &host, Some(&cookie))).await;
    assert_eq!(status, 401);
    assert!(body.contains("ロック"), "{body}");
    // Still locked on the next request; the printed URL opens a new session.
    let (status, _, _) = http(addr, &get("/", &host, Some(&cookie))).await;
    assert_eq!(status, 401);
    let again = login(&d).await;
    let (status, _, _) = http(addr, &get("/", &host, Some(&again))).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_are_downloads_and_unknown_members_are_not_served() {
    let w = World::start(Backend::Sqlite).await;
    publish_all(&w).await;
    let doc = document_for(DocKind::Referral, CLINIC, HOSPITAL, &["scan.html"]);
    let clinic = w.session(&w.clinic).await;
    bounded(clinic.send_members(
        &[HOSPITAL.parse().unwrap()],
        renkei::package::PackageKind::Referral,
        None,
        None,
        doc,
        vec![renkei::client::ops::memory_member(
            "attachments/scan.html",
            "text/html",
            b"<script>alert(1)</script>".to_vec(),
        )],
        |_, _| {},
    ))
    .await
    .unwrap();
    let hospital = w.session(&w.hospital).await;
    let got = bounded(hospital.receive_all(&w.hospital.join("received")))
        .await
        .unwrap();
    let envelope = got[0].0.clone();
    let d = Desk::start(&w.hospital, &w.relay.url, Duration::from_secs(1800)).await;
    let addr = d.running.addr;
    let host = format!("127.0.0.1:{}", addr.port());
    let cookie = login(&d).await;
    let (status, head, body) = http(
        addr,
        &get(
            &format!("/r/{envelope}/attachments/scan.html"),
            &host,
            Some(&cookie),
        ),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(header(&head, "content-disposition")
        .unwrap()
        .starts_with("attachment;"));
    assert_eq!(
        header(&head, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(body, "<script>alert(1)</script>");
    for path in [
        format!("/r/{envelope}/attachments/..%2Fmanifest.json"),
        format!("/r/{envelope}/attachments/other.pdf"),
        format!("/r/{}/attachments/scan.html", "0".repeat(64)),
    ] {
        let (status, _, _) = http(addr, &get(&path, &host, Some(&cookie))).await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn favourites_statistics_and_the_auditors_desk() {
    let w = World::start(Backend::Sqlite).await;
    publish_all(&w).await;
    // One referral, received by the hospital.
    let clinic = w.session(&w.clinic).await;
    bounded(clinic.send_members(
        &[HOSPITAL.parse().unwrap()],
        renkei::package::PackageKind::Referral,
        None,
        None,
        document_for(DocKind::Referral, CLINIC, HOSPITAL, &[]),
        Vec::new(),
        |_, _| {},
    ))
    .await
    .unwrap();
    let d = Desk::start(&w.clinic, &w.relay.url, Duration::from_secs(1800)).await;
    let addr = d.running.addr;
    let host = format!("127.0.0.1:{}", addr.port());
    let own = format!("http://{host}");
    let cookie = login(&d).await;
    let (_, _, page) = http(addr, &get("/", &host, Some(&cookie))).await;
    let csrf = csrf_of(&page);
    let (status, _, _) = http(
        addr,
        &post("/sync", &host, &cookie, Some(&own), &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 303);

    // A favourite addressee comes first.
    let (status, _, _) = http(
        addr,
        &post(
            &format!("/directory/{RECOVERY}/favourite"),
            &host,
            &cookie,
            Some(&own),
            &format!("csrf={csrf}&on=1"),
        ),
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, json) = http(addr, &get("/directory?q=", &host, Some(&cookie))).await;
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list[0]["id"], RECOVERY, "{list}");
    assert_eq!(list[0]["group"], "お気に入り");
    assert!(list.as_array().unwrap().iter().any(|a| a["id"] == HOSPITAL));
    assert!(
        !list.as_array().unwrap().iter().any(|a| a["id"] == CLINIC),
        "not itself"
    );

    // Statistics count what was sent, by month and counterpart; CSV too.
    let (status, _, page) = http(addr, &get("/stats", &host, Some(&cookie))).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("紹介送信") && page.contains("市立中央病院"),
        "{page}"
    );
    assert!(page.contains("初診患者数を入力すると表示します"));
    let (_, _, page) = http(
        addr,
        &get(
            "/stats?first_visits=200&other_referrals=9",
            &host,
            Some(&cookie),
        ),
    )
    .await;
    // The clinic received no referral through renkei: 9 by hand of 200.
    assert!(page.contains("4.5%"), "{page}");
    let (status, head, csv) = http(addr, &get("/stats.csv", &host, Some(&cookie))).await;
    assert_eq!(status, 200);
    assert!(header(&head, "content-disposition")
        .unwrap()
        .starts_with("attachment;"));
    assert!(
        csv.contains(&format!(",sent,referral,紹介,{HOSPITAL},市立中央病院,1")),
        "{csv}"
    );

    // The auditor's desk shows the audit, not a facility's screens.
    let a = Desk::start(&w.auditor, &w.relay.url, Duration::from_secs(1800)).await;
    let addr = a.running.addr;
    let host = format!("127.0.0.1:{}", addr.port());
    let own = format!("http://{host}");
    let cookie = login(&a).await;
    let (status, head, _) = http(addr, &get("/", &host, Some(&cookie))).await;
    assert_eq!((status, header(&head, "location")), (303, Some("/audit")));
    let (_, _, page) = http(addr, &get("/audit", &host, Some(&cookie))).await;
    let csrf = csrf_of(&page);
    let (status, _, _) = http(
        addr,
        &post("/sync", &host, &cookie, Some(&own), &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 303);
    let (status, _, page) = http(addr, &get("/audit", &host, Some(&cookie))).await;
    assert_eq!(status, 200);
    assert!(page.contains("検証済みのログ"), "{page}");
    assert!(page.contains("不整合は見つかっていません"), "{page}");
    assert!(page.contains(CLINIC), "counts per facility: {page}");
    let (status, head, _) = http(addr, &get("/audit/report.csv", &host, Some(&cookie))).await;
    assert_eq!(status, 200);
    assert!(header(&head, "content-disposition").is_some());
}

/// `renkei demo --desk`: the walk-through, then both desks until a signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_both_desks_until_stopped() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_renkei"))
        .args(["demo", "--desk", "--no-browser"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    // Read (and keep draining) the demo's output: the URLs arrive on a channel.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if let Some(i) = line.find("http://127.0.0.1:") {
                let _ = tx.send(line[i..].trim().to_string());
            }
        }
    });
    let mut urls = Vec::new();
    while urls.len() < 2 {
        let url = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("the demo prints both desks' URLs")
            .expect("the demo is still running");
        urls.push(url);
    }
    assert_eq!(urls.len(), 2, "{urls:?}");
    for url in &urls {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let addr: SocketAddr = host.parse().unwrap();
        let (status, head, _) = http(addr, &get(path, host, None)).await;
        assert_eq!(status, 303, "{head}");
        let cookie = header(&head, "set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let (status, _, page) = http(addr, &get("/", host, Some(&cookie))).await;
        assert_eq!(status, 200);
        assert!(page.contains("受信箱"), "{page}");
    }
    // SIGTERM stops the desks, the relay and the demo cleanly.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
}
