//! Opening sealed packages: every way a package can be wrong must be
//! refused as a verification failure with nothing released, and genuine
//! packages must open for each addressed facility.

mod common;

use std::fs;
use std::io::{self, Read};
use std::time::{Duration, SystemTime};

use common::*;
use renkei::identity::Kind;
use renkei::package::{self, Limits, MemberSource, OpenError};
use renkei::pki::CertError;

fn pair() -> (Region, Facility, Facility) {
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let hospital = region.facility(HOSPITAL, Kind::RegionalSupportHospital, "みなと総合病院");
    (region, clinic, hospital)
}

/// Seal a referral from `clinic` to `hospital` (no copy for the sender)
/// whose document lists `listed` as its attachments, carrying
/// `attachments`.
fn seal_referral(
    clinic: &Facility,
    hospital: &Facility,
    listed: &[&str],
    attachments: Vec<MemberSource<'static>>,
) -> Result<package::Sealed, package::SealError> {
    package::seal(
        package::SealRequest {
            sender_key: &clinic.key,
            sender_cert: &clinic.cert,
            sender_copy: false,
            recipients: std::slice::from_ref(&hospital.cert),
            kind: package::PackageKind::Referral,
            thread_id: None,
            in_reply_to: None,
            document: document(document_for(
                renkei::document::DocKind::Referral,
                CLINIC,
                HOSPITAL,
                listed,
            )),
            attachments,
            limits: Limits::default(),
        },
        io::sink(),
    )
}

// ---------------------------------------------------------------------------
// Positive cases
// ---------------------------------------------------------------------------

#[test]
fn round_trip_with_japanese_attachment_names() {
    let (_region, clinic, hospital) = pair();
    let pdf: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let png = b"\x89PNG\r\n\x1a\nnot really an image".to_vec();
    let txt = "紹介の経緯: 胸痛精査のため。\n".as_bytes().to_vec();
    let attachments = vec![
        mem("attachments/検査結果.pdf", pdf.clone()),
        mem("attachments/胸部レントゲン 2024-05-01.png", png.clone()),
        mem("attachments/紹介状（補足）.txt", txt.clone()),
    ];
    let (bytes, sealed) = seal_with(&clinic, &[&hospital], attachments, true);

    let (opened, attempt) = expect_opened(&hospital, &bytes);
    assert_eq!(opened.manifest, sealed.manifest);
    assert_eq!(opened.sender.fingerprint, clinic.cert.fingerprint);
    assert_eq!(opened.manifest.sender.facility_id, clinic.id);
    assert_eq!(opened.manifest.recipients.len(), 1);
    assert_eq!(opened.manifest.recipients[0].facility_id, hospital.id);
    let out = &attempt.out;
    let doc = fs::read(out.join("document.json")).unwrap();
    assert_eq!(sha256_hex(&doc), sealed.manifest.members[0].sha256);
    assert_eq!(opened.summary.attachments.len(), 3);
    assert_eq!(fs::read(out.join("attachments/検査結果.pdf")).unwrap(), pdf);
    assert_eq!(
        fs::read(out.join("attachments/胸部レントゲン 2024-05-01.png")).unwrap(),
        png
    );
    assert_eq!(
        fs::read(out.join("attachments/紹介状（補足）.txt")).unwrap(),
        txt
    );
    // The signed evidence is kept beside the members.
    assert_eq!(
        listing(out),
        vec![
            "attachments/検査結果.pdf",
            "attachments/紹介状（補足）.txt",
            "attachments/胸部レントゲン 2024-05-01.png",
            "document.json",
            "manifest.json",
            "manifest.sig",
            "sender.crt",
        ]
    );
    let paths: Vec<&str> = opened
        .manifest
        .members
        .iter()
        .map(|m| m.path.as_str())
        .collect();
    assert_eq!(
        paths,
        vec![
            "document.json",
            "attachments/検査結果.pdf",
            "attachments/胸部レントゲン 2024-05-01.png",
            "attachments/紹介状（補足）.txt",
            "sender.crt",
        ]
    );
    let pdf_entry = &opened.manifest.members[1];
    assert_eq!(pdf_entry.media_type, "application/pdf");
    assert_eq!(pdf_entry.size, pdf.len() as u64);
    assert_eq!(pdf_entry.sha256, sha256_hex(&pdf));
    // The envelope ID is the SHA-256 of the ciphertext.
    assert_eq!(hex::encode(sealed.envelope_id), sha256_hex(&bytes));
    assert_eq!(sealed.ciphertext_size, bytes.len() as u64);
}

/// Released plaintext is private to the facility's user whatever the umask:
/// the folder and its subfolders 0700, every file 0600.
#[cfg(unix)]
#[test]
fn opened_plaintext_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_region, clinic, hospital) = pair();
    let (bytes, _) = seal_with(
        &clinic,
        &[&hospital],
        vec![mem("attachments/検査結果.csv", "HbA1c,7.2\n")],
        false,
    );
    let (_, attempt) = expect_opened(&hospital, &bytes);
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&attempt.out), 0o700);
    let mut files = 0;
    let mut stack = vec![attempt.out.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files += 1;
            }
        }
    }
    assert!(files >= 5, "document, attachment and the signed evidence");
}

#[test]
fn sender_reopens_its_own_copy() {
    let (_region, clinic, hospital) = pair();
    let (bytes, sealed) = seal_with(&clinic, &[&hospital], vec![], true);
    assert!(sealed.manifest.sender_copy);
    let (opened, attempt) = expect_opened(&clinic, &bytes);
    assert_eq!(opened.manifest.package_id, sealed.manifest.package_id);
    assert!(attempt.out.join("document.json").is_file());
}

#[test]
fn without_a_sender_copy_the_sender_cannot_open() {
    let (_region, clinic, hospital) = pair();
    let (bytes, _) = seal_with(&clinic, &[&hospital], vec![], false);
    let e = expect_refused(&clinic, &bytes);
    assert!(matches!(e, OpenError::NotEncryptedForUs), "{e:?}");
    expect_opened(&hospital, &bytes);
}

#[test]
fn every_recipient_opens_a_package_for_several() {
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let recovery = region.facility(RECOVERY, Kind::RecoveryHospital, "あおば回復期病院");
    let outsider = region.facility(OTHER, Kind::Clinic, "かもめ診療所");
    let (bytes, sealed) = seal_with(
        &clinic,
        &[&hospital, &recovery],
        vec![mem("attachments/サマリー.txt", "退院時サマリー")],
        true,
    );
    let ids: Vec<String> = sealed
        .manifest
        .recipients
        .iter()
        .map(|r| r.facility_id.to_string())
        .collect();
    assert_eq!(ids, vec![HOSPITAL, RECOVERY]);
    for f in [&hospital, &recovery, &clinic] {
        let (opened, attempt) = expect_opened(f, &bytes);
        assert_eq!(opened.manifest, sealed.manifest);
        assert_eq!(
            fs::read_to_string(attempt.out.join("attachments/サマリー.txt")).unwrap(),
            "退院時サマリー"
        );
    }
    let e = expect_refused(&outsider, &bytes);
    assert!(matches!(e, OpenError::NotEncryptedForUs), "{e:?}");
}

/// Deterministic pseudo-random bytes, generated on the fly (never held in
/// memory): byte `i` is byte `i % 8` of `splitmix64(i / 8)`.
struct Pattern {
    pos: u64,
    len: u64,
}

impl Pattern {
    fn new(len: u64) -> Pattern {
        Pattern { pos: 0, len }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.len - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let mut i = 0;
        while i < n {
            let word = splitmix64(self.pos / 8).to_le_bytes();
            let off = (self.pos % 8) as usize;
            let take = (8 - off).min(n - i);
            buf[i..i + take].copy_from_slice(&word[off..off + take]);
            i += take;
            self.pos += take as u64;
        }
        Ok(n)
    }
}

fn sha256_of_reader(mut r: impl Read) -> (u64, String) {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        ctx.update(&buf[..k]);
        n += k as u64;
    }
    (n, hex::encode(ctx.finish()))
}

#[test]
fn a_64_mib_member_streams_through() {
    // 64 MiB with `cargo test --release` (the README's command and CI's);
    // unoptimized age/ChaCha20 needs over a minute for that, so a debug
    // build streams 8 MiB (still 128 age chunks) through the same path.
    const SIZE: u64 = if cfg!(debug_assertions) {
        8 << 20
    } else {
        64 << 20
    };
    let (_region, clinic, hospital) = pair();
    let work = tempfile::tempdir().unwrap();
    let pkg = work.path().join("big.age");
    let recipients = vec![hospital.cert.clone()];
    let sealed = package::seal(
        package::SealRequest {
            sender_key: &clinic.key,
            sender_cert: &clinic.cert,
            sender_copy: false,
            recipients: &recipients,
            kind: package::PackageKind::ClinicalInfo,
            thread_id: None,
            in_reply_to: None,
            document: document(document_for(
                renkei::document::DocKind::Referral,
                CLINIC,
                HOSPITAL,
                &["attachments/CT画像.dcm"],
            )),
            attachments: vec![MemberSource {
                path: "attachments/CT画像.dcm".into(),
                media_type: "application/dicom".into(),
                size: SIZE,
                reader: Box::new(Pattern::new(SIZE)),
            }],
            limits: Limits::default(),
        },
        io::BufWriter::new(fs::File::create(&pkg).unwrap()),
    )
    .unwrap();
    let (want_len, want_hash) = sha256_of_reader(Pattern::new(SIZE));
    assert_eq!(want_len, SIZE);
    let member = &sealed.manifest.members[1];
    assert_eq!(member.size, SIZE);
    assert_eq!(member.sha256, want_hash);
    assert!(fs::metadata(&pkg).unwrap().len() > SIZE);

    let out = work.path().join("inbox");
    let opened =
        renkei::files::open_to_dir(&hospital.profile, std::fs::File::open(&pkg).unwrap(), &out)
            .unwrap();
    assert_eq!(opened.manifest, sealed.manifest);
    let (len, hash) = sha256_of_reader(fs::File::open(out.join("attachments/CT画像.dcm")).unwrap());
    assert_eq!(len, SIZE);
    assert_eq!(hash, want_hash);
}

#[test]
fn the_crafting_helper_makes_packages_that_open() {
    // The hostile cases below change one thing each in a crafted package;
    // the unchanged crafted package must open.
    let (_region, clinic, hospital) = pair();
    let bytes = Craft::new(&clinic, &[&hospital]).build();
    let (opened, attempt) = expect_opened(&hospital, &bytes);
    assert_eq!(opened.manifest.members.len(), 3);
    assert!(attempt.out.join("attachments/検査結果.csv").is_file());
}

// ---------------------------------------------------------------------------
// 1, 2: damage in transit
// ---------------------------------------------------------------------------

fn header_len(bytes: &[u8]) -> usize {
    // The age header ends with the "--- MAC" line.
    let mac = bytes
        .windows(4)
        .position(|w| w == b"\n---")
        .expect("age header MAC line");
    mac + bytes[mac + 1..].iter().position(|&b| b == b'\n').unwrap() + 2
}

#[test]
fn any_changed_byte_is_refused() {
    let (_region, clinic, hospital) = pair();
    let bytes = seal_simple(&clinic, &[&hospital]);
    let h = header_len(&bytes);
    assert!(h > 100 && h + 16 + 16 < bytes.len());
    // Through the CLI helper (no OUTDIR left behind) at chosen places:
    // the version line, a stanza, the MAC, the payload nonce, the first
    // body byte, the middle, the tag, the last byte.
    let chosen = [
        0,
        10,
        30,
        60,
        h - 5,
        h - 2,
        h,
        h + 15,
        h + 16,
        (h + bytes.len()) / 2,
        bytes.len() - 17,
        bytes.len() - 1,
    ];
    for &i in &chosen {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        let e = expect_refused(&hospital, &t);
        if i >= h {
            assert!(matches!(e, OpenError::Damaged), "byte {i}: {e:?}");
        } else {
            assert!(
                matches!(e, OpenError::Damaged | OpenError::NotEncryptedForUs),
                "byte {i}: {e:?}"
            );
        }
    }
    // And, with the library directly, every byte of the header, the nonce
    // and the last tag, and a stride through the body.
    let trust = hospital.trust();
    let positions = (0..h + 16)
        .chain((h + 16..bytes.len()).step_by(29))
        .chain(bytes.len() - 48..bytes.len());
    for i in positions {
        let mask = if i.is_multiple_of(2) { 0x01u8 } else { 0x80 };
        let mut t = bytes.clone();
        t[i] ^= mask;
        match open_lib_with(&hospital, &trust, &t, &Limits::default(), None) {
            Ok(_) => panic!("byte {i} ^ {mask:#x} was accepted"),
            Err(e) => assert!(
                e.is_verification_failure()
                    && matches!(e, OpenError::Damaged | OpenError::NotEncryptedForUs),
                "byte {i}: {e:?}"
            ),
        }
    }
}

/// Issue #11: the age crate parses a header in time quadratic in its
/// length; a megabyte of junk stanzas is refused by the 64 KiB bound
/// before age sees it.
#[test]
fn a_megabyte_of_junk_header_stanzas_is_refused_unread() {
    let (_region, clinic, hospital) = pair();
    let bytes = seal_simple(&clinic, &[&hospital]);
    let intro = package::header::INTRO;
    let mut junk = intro.to_vec();
    while junk.len() < 1 << 20 {
        junk.extend_from_slice(b"-> junk-stanza AAAA\nAAAA\n");
    }
    junk.extend_from_slice(&bytes[intro.len()..]);
    let e = expect_refused(&hospital, &junk);
    assert!(matches!(e, OpenError::HeaderTooLong), "{e:?}");
    assert!(e.is_verification_failure());
    assert_eq!(e.reason_code(), "damaged");
    assert!(e.to_string().contains("longer than 65536 bytes"), "{e}");
    // Junk that keeps the header inside the bound is left to age (whose
    // MAC check fails).
    let mut small = intro.to_vec();
    for _ in 0..100 {
        small.extend_from_slice(b"-> junk-stanza AAAA\nAAAA\n");
    }
    small.extend_from_slice(&bytes[intro.len()..]);
    let e = expect_refused(&hospital, &small);
    assert!(
        matches!(e, OpenError::Damaged | OpenError::NotEncryptedForUs),
        "{e:?}"
    );
}

#[test]
fn truncation_is_refused() {
    let (_region, clinic, hospital) = pair();
    let bytes = seal_simple(&clinic, &[&hospital]);
    let h = header_len(&bytes);
    for len in [
        0,
        1,
        21,
        h - 1,
        h,
        h + 16,
        h + 17,
        (h + bytes.len()) / 2,
        bytes.len() - 17,
        bytes.len() - 16,
        bytes.len() - 1,
    ] {
        let e = expect_refused(&hospital, &bytes[..len]);
        assert!(matches!(e, OpenError::Damaged), "length {len}: {e:?}");
    }
}

#[test]
fn truncation_of_a_multi_chunk_package_at_a_chunk_boundary_is_refused() {
    // age chunks are 64 KiB of plaintext + 16 bytes of tag; cutting right
    // after a whole chunk must still fail (the last chunk is flagged).
    let (_region, clinic, hospital) = pair();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (bytes, _) = seal_with(
        &clinic,
        &[&hospital],
        vec![mem("attachments/画像.png", big)],
        false,
    );
    let h = header_len(&bytes);
    let chunk = 64 * 1024 + 16;
    for k in 1..=3 {
        let len = h + 16 + k * chunk;
        assert!(len < bytes.len());
        let e = expect_refused(&hospital, &bytes[..len]);
        assert!(matches!(e, OpenError::Damaged), "length {len}: {e:?}");
    }
}

// ---------------------------------------------------------------------------
// 3, 4: addressing
// ---------------------------------------------------------------------------

#[test]
fn a_package_for_another_facility_is_not_encrypted_for_us() {
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let other = region.facility(OTHER, Kind::Hospital, "かもめ病院");
    let bytes = seal_simple(&clinic, &[&hospital]);
    let e = expect_refused(&other, &bytes);
    assert!(matches!(e, OpenError::NotEncryptedForUs), "{e:?}");
    assert_eq!(e.reason_code(), "not-encrypted-for-recipient");
}

#[test]
fn surreptitious_forwarding_is_refused() {
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let third = region.facility(RECOVERY, Kind::RecoveryHospital, "あおば回復期病院");
    let bytes = seal_simple(&clinic, &[&hospital]);
    // The hospital, a legitimate recipient, decrypts and re-encrypts the
    // very same signed inner tar to a third facility.
    let plain = decrypt(&bytes, &hospital);
    let forwarded = encrypt(&plain, &[third.recipient()]);
    let e = expect_refused(&third, &forwarded);
    match &e {
        OpenError::NotAddressedToUs {
            me,
            addressed,
            sender,
        } => {
            assert_eq!(me, RECOVERY);
            assert_eq!(addressed, HOSPITAL);
            assert!(sender.contains(CLINIC), "{sender}");
        }
        other => panic!("expected NotAddressedToUs, got {other:?}"),
    }
    assert!(e.to_string().contains("forwarded"), "{e}");
    assert_eq!(e.reason_code(), "not-addressed-to-recipient");
}

/// Issue #11 item 9: the very same signed inner tar, re-encrypted with one
/// more X25519 stanza than the manifest accounts for (a hidden reader), is
/// refused although every signature verifies; so is a header with fewer.
#[test]
fn a_hidden_reader_in_the_age_header_is_refused() {
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let hidden = region.facility(OTHER, Kind::Clinic, "かもめ診療所");
    let mut craft = Craft::new(&clinic, &[&hospital]);
    let plain = craft.plaintext_with(&craft.manifest());
    craft.encrypt_to = Some(vec![hospital.recipient(), hidden.recipient()]);
    let e = expect_refused(&hospital, &craft.encrypt(&plain));
    match &e {
        OpenError::UnexpectedRecipients { found, signed } => {
            assert_eq!(*signed, 1);
            assert!(found.starts_with("2 X25519"), "{found}");
        }
        other => panic!("expected UnexpectedRecipients, got {other:?}"),
    }
    assert_eq!(e.reason_code(), "unexpected-recipients");
    assert!(e.is_verification_failure());
    // The same tar to the hospital alone opens (control).
    craft.encrypt_to = None;
    expect_opened(&hospital, &craft.encrypt(&plain));

    // A genuine sealed package's inner tar (recipient + sender copy: two
    // readers signed) re-encrypted with a third reader.
    let bytes = seal_simple(&clinic, &[&hospital]);
    let inner = decrypt(&bytes, &hospital);
    let three = encrypt(
        &inner,
        &[hospital.recipient(), clinic.recipient(), hidden.recipient()],
    );
    let e = expect_refused(&hospital, &three);
    assert!(
        matches!(e, OpenError::UnexpectedRecipients { signed: 2, .. }),
        "{e:?}"
    );
    // The manifest claims a sender copy the header does not carry.
    let craft = Craft::new(&clinic, &[&hospital]);
    let mut m = craft.manifest();
    m.sender_copy = true;
    let e = expect_refused(&hospital, &craft.build_with(&m));
    assert!(
        matches!(e, OpenError::UnexpectedRecipients { signed: 2, .. }),
        "{e:?}"
    );
}

#[test]
fn a_recipient_entry_with_another_age_key_is_not_addressed_to_us() {
    // The manifest names this facility's ID but a different age recipient
    // (e.g. its old key): refused, even though it decrypts.
    let (_region, clinic, hospital) = pair();
    let craft = Craft::new(&clinic, &[&hospital]);
    let mut m = craft.manifest();
    m.recipients[0].age_recipient = renkei::keys::AgeIdentity::generate()
        .recipient()
        .to_string();
    let e = expect_refused(&hospital, &craft.build_with(&m));
    assert!(matches!(e, OpenError::NotAddressedToUs { .. }), "{e:?}");
}

// ---------------------------------------------------------------------------
// 5, 6, 7: the sender's certificate
// ---------------------------------------------------------------------------

#[test]
fn an_expired_sender_certificate_is_refused() {
    let region = Region::new();
    let clinic = region.facility_days(CLINIC, Kind::Clinic, "さくら内科クリニック", 30);
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let bytes = seal_simple(&clinic, &[&hospital]);
    // Fine today...
    open_lib(&hospital, &bytes, &Limits::default(), None).expect("valid today");
    // ...refused when opened after the certificate expired.
    let later = SystemTime::now() + Duration::from_secs(31 * 86_400);
    let e = open_lib(&hospital, &bytes, &Limits::default(), Some(later)).unwrap_err();
    assert!(e.is_verification_failure());
    match &e {
        OpenError::Sender(CertError::Expired { id, not_after, .. }) => {
            assert_eq!(id, CLINIC);
            assert_eq!(not_after, &clinic.cert.not_after);
        }
        other => panic!("expected an expired sender, got {other:?}"),
    }
    assert_eq!(e.reason_code(), "sender-expired");
    // ...and before it was valid.
    let earlier = SystemTime::now() - Duration::from_secs(86_400);
    let e = open_lib(&hospital, &bytes, &Limits::default(), Some(earlier)).unwrap_err();
    assert!(
        matches!(e, OpenError::Sender(CertError::Expired { .. })),
        "{e:?}"
    );
}

#[test]
fn an_expired_sender_certificate_is_refused_by_open() {
    // A certificate issued for 0 days expires at once; `renkei open` (now)
    // refuses it and leaves no folder.
    let region = Region::new();
    let clinic = region.facility_days(CLINIC, Kind::Clinic, "さくら内科クリニック", 0);
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let bytes = seal_simple(&clinic, &[&hospital]);
    std::thread::sleep(Duration::from_millis(1100));
    let e = expect_refused(&hospital, &bytes);
    assert!(
        matches!(e, OpenError::Sender(CertError::Expired { .. })),
        "{e:?}"
    );
}

#[test]
fn a_revoked_sender_certificate_is_refused() {
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let mut hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let bytes = seal_simple(&clinic, &[&hospital]);
    expect_opened(&hospital, &bytes);
    let crl = region.revoke(&clinic);
    hospital.install_crl(&crl);
    let e = expect_refused(&hospital, &bytes);
    match &e {
        OpenError::Sender(CertError::Revoked { id, date }) => {
            assert_eq!(id, CLINIC);
            let today = time::OffsetDateTime::now_utc().date().to_string();
            assert_eq!(date, &today);
        }
        other => panic!("expected a revoked sender, got {other:?}"),
    }
    assert!(e.to_string().contains("revoked on"), "{e}");
    assert_eq!(e.reason_code(), "sender-revoked");
}

#[test]
fn a_sender_certificate_from_another_ca_is_refused() {
    let region = Region::new();
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    // Another CA with the very same name, certifying the same facility ID.
    let rogue_region = Region::named(CA_NAME);
    let rogue = rogue_region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let bytes = seal_simple(&rogue, &[&hospital]);
    let e = expect_refused(&hospital, &bytes);
    assert!(
        matches!(&e, OpenError::Sender(CertError::UnknownIssuer(id)) if id == CLINIC),
        "{e:?}"
    );
    assert_eq!(e.reason_code(), "sender-unknown-ca");
    // And with a differently named CA.
    let other_region = Region::named("よその地域 CA");
    let other = other_region.facility(OTHER, Kind::Clinic, "かもめ診療所");
    let e = expect_refused(&hospital, &seal_simple(&other, &[&hospital]));
    assert!(
        matches!(e, OpenError::Sender(CertError::UnknownIssuer(_))),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------
// 8 - 11: members against the manifest
// ---------------------------------------------------------------------------

#[test]
fn a_member_whose_hash_differs_is_refused() {
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    let mut members = member_entries(&craft.entries);
    // Same size, other content.
    craft.entries[1].data[0] ^= 0x20;
    members[1].size = craft.entries[1].data.len() as u64;
    craft.members = Some(members);
    let e = expect_refused(&hospital, &craft.build());
    match &e {
        OpenError::MemberMismatch { path, why } => {
            assert_eq!(path, "attachments/検査結果.csv");
            assert!(why.contains("SHA-256"), "{why}");
        }
        other => panic!("expected MemberMismatch, got {other:?}"),
    }
}

#[test]
fn a_member_whose_size_differs_is_refused() {
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    let mut members = member_entries(&craft.entries);
    members[0].size += 1;
    craft.members = Some(members);
    let e = expect_refused(&hospital, &craft.build());
    match &e {
        OpenError::MemberMismatch { path, why } => {
            assert_eq!(path, "document.json");
            assert!(why.contains("size"), "{why}");
        }
        other => panic!("expected MemberMismatch, got {other:?}"),
    }
}

#[test]
fn a_missing_member_is_refused() {
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    let members = member_entries(&craft.entries);
    craft.entries.remove(1);
    craft.members = Some(members);
    let e = expect_refused(&hospital, &craft.build());
    assert!(
        matches!(&e, OpenError::MissingMember(p) if p == "attachments/検査結果.csv"),
        "{e:?}"
    );
}

#[test]
fn a_package_without_its_document_is_refused() {
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    craft.entries.remove(0);
    let e = expect_refused(&hospital, &craft.build());
    assert!(
        matches!(&e, OpenError::MissingMember(p) if p == "document.json"),
        "{e:?}"
    );
}

#[test]
fn an_extra_member_is_refused() {
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    let members = member_entries(&craft.entries);
    craft
        .entries
        .insert(2, RawEntry::file("attachments/追加.txt", "not signed"));
    craft.members = Some(members);
    let e = expect_refused(&hospital, &craft.build());
    assert!(
        matches!(&e, OpenError::ExtraMember(p) if p == "attachments/追加.txt"),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------
// 12, 13: unsafe member paths and types, duplicates
// ---------------------------------------------------------------------------

/// A package whose signed manifest lists `bad` like any other member, so
/// that only the path/type check can stop it.
fn with_member(clinic: &Facility, hospital: &Facility, bad: RawEntry) -> Vec<u8> {
    let mut craft = Craft::new(clinic, &[hospital]);
    craft.entries.insert(1, bad);
    craft.build()
}

fn assert_malformed(e: &OpenError, needle: &str) {
    match e {
        OpenError::Malformed(why) => assert!(why.contains(needle), "{why}"),
        other => panic!("expected Malformed({needle}), got {other:?}"),
    }
    assert_eq!(e.reason_code(), "malformed");
}

#[test]
fn an_absolute_member_path_is_refused() {
    let (_region, clinic, hospital) = pair();
    let target = tempfile::tempdir().unwrap();
    let abs = target.path().join("pwned.txt");
    let bad = RawEntry::file(abs.to_str().unwrap(), "x");
    let e = expect_refused(&hospital, &with_member(&clinic, &hospital, bad));
    assert_malformed(&e, "unsafe member path");
    assert!(!abs.exists());
    let e = expect_refused(
        &hospital,
        &with_member(
            &clinic,
            &hospital,
            RawEntry::file("/attachments/a.txt", "x"),
        ),
    );
    assert_malformed(&e, "unsafe member path");
}

#[test]
fn a_dot_dot_member_path_is_refused() {
    let (_region, clinic, hospital) = pair();
    for name in [
        "../escape.txt",
        "attachments/../../escape.txt",
        "attachments/../document.json",
        "attachments/..",
    ] {
        let bad = RawEntry::raw(name.as_bytes(), "x");
        let a = open_file(&hospital, &with_member(&clinic, &hospital, bad.clone()));
        assert!(!a.work.path().join("escape.txt").exists());
        assert!(!a.work.path().join("inbox/escape.txt").exists());
        let e = expect_refused(&hospital, &with_member(&clinic, &hospital, bad));
        assert_malformed(&e, "unsafe member path");
    }
}

#[test]
fn other_unsafe_member_paths_are_refused() {
    let (_region, clinic, hospital) = pair();
    for name in [
        &b"attachments/.hidden"[..],
        b"attachments/a/b.txt",
        b"attachments//x",
        b"attachments/./x",
        b"attachments\\x.txt",
        b"notes.txt",
        b"attachments/bell\x07.txt",
        b"attachments/\xff\xfe.txt",
    ] {
        let e = expect_refused(
            &hospital,
            &with_member(&clinic, &hospital, RawEntry::raw(name, "x")),
        );
        assert!(matches!(e, OpenError::Malformed(_)), "{name:?}: {e:?}");
    }
}

/// Issue #11 item 13: names that hide what they are or mean another file
/// on some desk are refused at seal and at open, one of each class.
const DECEPTIVE_NAMES: &[&str] = &[
    "attachments/請求書\u{202E}fdp.exe", // bidi override
    "attachments/a\u{2067}b.pdf",        // bidi isolate
    "attachments/a\u{200B}.pdf",         // zero-width space
    "attachments/\u{FEFF}a.pdf",         // BOM (Cf)
    "attachments/a\u{0085}.pdf",         // C1 control (Cc)
    "attachments/a\u{FE0F}.pdf",         // variation selector
    "attachments/a:b.pdf",               // NTFS stream / drive separator
    "attachments/a\\b.pdf",              // Windows separator
    "attachments/CON.pdf",               // Windows device name
    "attachments/lpt1",                  // Windows device name, any case
    "attachments/Com9.tar.gz",           // any extension
    "attachments/report.pdf.",           // trailing dot
    "attachments/report.pdf ",           // trailing space
];

#[test]
fn deceptive_attachment_names_are_refused_at_seal() {
    let (_region, clinic, hospital) = pair();
    for name in DECEPTIVE_NAMES {
        let r = seal_referral(&clinic, &hospital, &[], vec![mem(name, "x")]);
        assert!(
            matches!(r, Err(renkei::package::SealError::BadName(..))),
            "{name:?}: {r:?}"
        );
    }
}

#[test]
fn a_member_that_shrinks_or_grows_while_it_is_sealed_is_refused() {
    // The declared size is what the file had when it was chosen; a file
    // cut short or appended to meanwhile must not be sealed as it is.
    let (_region, clinic, hospital) = pair();
    for (declared, actual) in [
        (10u64, 5usize),
        (10, 11),
        (3 << 20, (3 << 20) - 1),
        (3 << 20, (3 << 20) + 7),
    ] {
        let r = seal_referral(
            &clinic,
            &hospital,
            &["attachments/scan.dcm"],
            vec![MemberSource {
                size: declared,
                ..mem("attachments/scan.dcm", vec![7u8; actual])
            }],
        );
        match r {
            Err(renkei::package::SealError::SizeChanged(path, d, _)) => {
                assert_eq!((path.as_str(), d), ("attachments/scan.dcm", declared));
            }
            other => panic!("{declared} declared, {actual} read: {other:?}"),
        }
    }
}

#[test]
fn deceptive_attachment_names_are_refused_at_open() {
    let (_region, clinic, hospital) = pair();
    for name in DECEPTIVE_NAMES {
        let bad = RawEntry::file(name, "x");
        let e = expect_refused(&hospital, &with_member(&clinic, &hospital, bad));
        assert_malformed(&e, "unsafe member path");
    }
}

#[test]
fn names_equal_ignoring_case_or_normalization_are_refused_at_seal_and_at_open() {
    let (_region, clinic, hospital) = pair();
    for (a, b) in [
        ("attachments/Report.PDF", "attachments/report.pdf"),
        ("attachments/Maße.txt", "attachments/MASSE.txt"),
        ("attachments/ＡＢＣ.txt", "attachments/ａｂｃ.txt"),
        // One name in NFC and in NFD (as macOS writes names): one file on
        // a normalization-insensitive file system.
        (
            "attachments/検査データ.csv",
            "attachments/検査テ\u{3099}ータ.csv",
        ),
        ("attachments/Café.pdf", "attachments/CAFE\u{301}.pdf"),
    ] {
        let r = seal_referral(&clinic, &hospital, &[], vec![mem(a, "1"), mem(b, "2")]);
        assert!(
            matches!(&r, Err(renkei::package::SealError::Duplicate(n)) if n == b),
            "{a} {b}: {r:?}"
        );
        let mut craft = Craft::new(&clinic, &[&hospital]);
        craft.entries.insert(1, RawEntry::file(a, "1"));
        craft.entries.insert(2, RawEntry::file(b, "2"));
        let e = expect_refused(&hospital, &craft.build());
        assert_malformed(&e, "duplicate member");
    }
}

#[test]
fn a_symlink_entry_is_refused() {
    let (_region, clinic, hospital) = pair();
    let bad = RawEntry::special(
        "attachments/link.txt",
        tar::EntryType::Symlink,
        "/etc/passwd",
    );
    let e = expect_refused(&hospital, &with_member(&clinic, &hospital, bad));
    assert_malformed(&e, "not a regular file");
}

#[test]
fn a_hard_link_entry_is_refused() {
    let (_region, clinic, hospital) = pair();
    let bad = RawEntry::special(
        "attachments/link.txt",
        tar::EntryType::Link,
        "document.json",
    );
    let e = expect_refused(&hospital, &with_member(&clinic, &hospital, bad));
    assert_malformed(&e, "not a regular file");
}

#[test]
fn device_entries_are_refused() {
    let (_region, clinic, hospital) = pair();
    for kind in [tar::EntryType::Char, tar::EntryType::Block] {
        let bad = RawEntry::special("attachments/dev", kind, "");
        let e = expect_refused(&hospital, &with_member(&clinic, &hospital, bad));
        assert_malformed(&e, "not a regular file");
    }
    let fifo = RawEntry::special("attachments/fifo", tar::EntryType::Fifo, "");
    let e = expect_refused(&hospital, &with_member(&clinic, &hospital, fifo));
    assert_malformed(&e, "not a regular file");
}

#[test]
fn a_directory_entry_is_refused() {
    let (_region, clinic, hospital) = pair();
    let bad = RawEntry::special("attachments/", tar::EntryType::Directory, "");
    let e = expect_refused(&hospital, &with_member(&clinic, &hospital, bad));
    assert_malformed(&e, "not a regular file");
}

#[test]
fn duplicate_member_names_are_refused() {
    let (_region, clinic, hospital) = pair();
    // The same attachment twice (the manifest lists it once).
    let mut craft = Craft::new(&clinic, &[&hospital]);
    let members = member_entries(&craft.entries);
    let dup = craft.entries[1].clone();
    craft.entries.insert(2, dup);
    craft.members = Some(members);
    let e = expect_refused(&hospital, &craft.build());
    assert_malformed(&e, "duplicate member");

    // The document twice, the second with other content.
    let mut craft = Craft::new(&clinic, &[&hospital]);
    craft
        .entries
        .insert(1, RawEntry::file("document.json", "{\"other\":true}"));
    let e = expect_refused(&hospital, &craft.build());
    assert_malformed(&e, "duplicate member");

    // The sender certificate twice.
    let mut craft = Craft::new(&clinic, &[&hospital]);
    let members = member_entries(&craft.entries);
    let cert = craft.entries[2].clone();
    craft.entries.push(cert);
    craft.members = Some(members);
    let e = expect_refused(&hospital, &craft.build());
    assert_malformed(&e, "duplicate member");
}

#[test]
fn a_duplicate_manifest_is_refused() {
    // Two manifest.json entries: a decoy first, the signed one second.
    // The archive is ambiguous (stock `tar -x` keeps the last) and must be
    // refused like any other duplicate name.
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    let decoy = craft.manifest();
    craft.entries.push(RawEntry::file(
        package::MANIFEST_PATH,
        serde_json::to_vec_pretty(&decoy).unwrap(),
    ));
    let e = expect_refused(&hospital, &craft.build());
    assert_malformed(&e, "duplicate member");
}

#[test]
fn a_duplicate_signature_is_refused() {
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    let m = craft.manifest();
    let (_, sig) = craft.sign(&m);
    craft.after = vec![RawEntry::file(package::SIGNATURE_PATH, sig)];
    let e = expect_refused(&hospital, &craft.build_with(&m));
    assert!(
        matches!(e, OpenError::Malformed(_) | OpenError::ExtraMember(_)),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------
// 14, 15: bounds
// ---------------------------------------------------------------------------

#[test]
fn too_many_members_are_refused() {
    let (_region, clinic, hospital) = pair();
    let limits = Limits::default();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    // document, sender.crt, manifest, signature + attachments: one over.
    let cert = craft.entries.pop().unwrap();
    craft.entries.truncate(1);
    for i in 0..(limits.max_members - 3) {
        craft
            .entries
            .push(RawEntry::file(&format!("attachments/{i:03}.txt"), "x"));
    }
    craft.entries.push(cert);
    let e = expect_refused(&hospital, &craft.build());
    assert_malformed(&e, &format!("more than {} members", limits.max_members));

    // With a small limit, through the library.
    let craft = Craft::new(&clinic, &[&hospital]);
    let small = Limits {
        max_members: 4,
        ..Limits::default()
    };
    let e = open_lib(&hospital, &craft.build(), &small, None).unwrap_err();
    assert_malformed(&e, "more than 4 members");
    // Exactly at the limit is fine.
    let exact = Limits {
        max_members: 5,
        ..Limits::default()
    };
    open_lib(&hospital, &craft.build(), &exact, None).expect("5 members within a limit of 5");
}

#[test]
fn an_oversized_manifest_is_refused() {
    let (_region, clinic, hospital) = pair();
    let limits = Limits::default();
    let craft = Craft::new(&clinic, &[&hospital]);
    let mut m = craft.manifest();
    // Pad a signed field until the manifest exceeds the limit.
    m.in_reply_to = Some("x".repeat(limits.max_manifest_bytes as usize));
    let e = expect_refused(&hospital, &craft.build_with(&m));
    assert_malformed(&e, "manifest is larger than");

    let small = Limits {
        max_manifest_bytes: 512,
        ..Limits::default()
    };
    let e = open_lib(&hospital, &craft.build(), &small, None).unwrap_err();
    assert_malformed(&e, "manifest is larger than 512 bytes");
}

#[test]
fn an_oversized_member_is_refused() {
    let (_region, clinic, hospital) = pair();
    let craft = Craft::new(&clinic, &[&hospital]);
    let small = Limits {
        max_member_bytes: 16,
        ..Limits::default()
    };
    let e = open_lib(&hospital, &craft.build(), &small, None).unwrap_err();
    assert_malformed(&e, "larger than 16 bytes");
    let small_total = Limits {
        max_total_bytes: 200,
        ..Limits::default()
    };
    let e = open_lib(&hospital, &craft.build(), &small_total, None).unwrap_err();
    assert_malformed(&e, "add up to more than 200 bytes");
}

// ---------------------------------------------------------------------------
// 16, 17: after the signature; bad signatures
// ---------------------------------------------------------------------------

#[test]
fn a_member_after_the_signature_is_refused() {
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    craft.after = vec![RawEntry::file("attachments/後から.txt", "appended")];
    let e = expect_refused(&hospital, &craft.build());
    assert!(
        matches!(&e, OpenError::ExtraMember(p) if p == "attachments/後から.txt"),
        "{e:?}"
    );
}

/// Issue #11 item 10: no tar record of any type may follow
/// `manifest.sig`, not even one that names no member by itself (a dangling
/// GNU long-name record, a PAX header).
#[test]
fn no_tar_record_of_any_type_may_follow_the_signature() {
    let (_region, clinic, hospital) = pair();
    let pax = |kind| RawEntry {
        name: b"PaxHeaders/x".to_vec(),
        kind,
        data: b"30 path=attachments/pax.txt\n".to_vec(),
        link: Vec::new(),
    };
    let cases: Vec<(&str, Vec<RawEntry>)> = vec![
        (
            "GNU long name alone",
            vec![long_name_record(b"attachments/late.txt")],
        ),
        (
            "GNU long name and a member",
            vec![
                long_name_record(b"attachments/late.txt"),
                RawEntry::file("attachments/x.txt", "late"),
            ],
        ),
        ("PAX x alone", vec![pax(tar::EntryType::XHeader)]),
        ("PAX g alone", vec![pax(tar::EntryType::XGlobalHeader)]),
        (
            "PAX x and a member",
            vec![
                pax(tar::EntryType::XHeader),
                RawEntry::file("attachments/x.txt", "late"),
            ],
        ),
        (
            "a member with an unsafe path",
            vec![RawEntry::file("../late.txt", "late")],
        ),
        (
            "a symlink",
            vec![RawEntry::special(
                "attachments/l",
                tar::EntryType::Symlink,
                "/etc/passwd",
            )],
        ),
        (
            "an empty regular file",
            vec![RawEntry::file("attachments/e", "")],
        ),
    ];
    for (what, after) in cases {
        let mut craft = Craft::new(&clinic, &[&hospital]);
        craft.after = after;
        let e = expect_refused(&hospital, &craft.build());
        assert!(matches!(e, OpenError::ExtraMember(_)), "{what}: {e:?}");
        assert_eq!(e.reason_code(), "extra-member", "{what}");
    }
    // A long-name record that names nothing (the archive ends after it) is
    // refused too.
    let mut entries = standard_entries(&clinic, &hospital);
    entries.push(long_name_record(b"attachments/dangling.txt"));
    let e = expect_refused(
        &hospital,
        &encrypt(&tar_bytes(&entries), &[hospital.recipient()]),
    );
    assert_malformed(&e, "names no member");
}

#[test]
fn data_after_the_end_of_the_archive_is_refused() {
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    craft.trailing = b"appended after the tar end".to_vec();
    let e = expect_refused(&hospital, &craft.build());
    assert!(matches!(e, OpenError::ExtraMember(_)), "{e:?}");

    // A whole hidden member after the end-of-archive blocks.
    let mut craft = Craft::new(&clinic, &[&hospital]);
    craft.trailing = tar_bytes(&[RawEntry::file("attachments/hidden.txt", "hidden")]);
    let e = expect_refused(&hospital, &craft.build());
    assert!(matches!(e, OpenError::ExtraMember(_)), "{e:?}");

    // Zero padding after the end is harmless (tar blocking).
    let mut craft = Craft::new(&clinic, &[&hospital]);
    craft.trailing = vec![0u8; 10_240];
    expect_opened(&hospital, &craft.build());
}

#[test]
fn an_edited_manifest_fails_the_signature() {
    // A legitimate recipient decrypts, edits the manifest, re-encrypts.
    let (_region, clinic, hospital) = pair();
    let bytes = seal_simple(&clinic, &[&hospital]);
    let mut entries = read_tar(&decrypt(&bytes, &hospital));
    let names: Vec<String> = entries.iter().map(RawEntry::path).collect();
    assert_eq!(names[names.len() - 2..], ["manifest.json", "manifest.sig"]);
    let manifest = &mut entries[names.len() - 2].data;
    let text = String::from_utf8(manifest.clone()).unwrap();
    assert!(text.contains("\"referral\""));
    *manifest = text.replace("\"referral\"", "\"transfer\"").into_bytes();
    let edited = encrypt(&tar_bytes(&entries), &[hospital.recipient()]);
    let e = expect_refused(&hospital, &edited);
    assert!(matches!(e, OpenError::BadSignature), "{e:?}");
    assert_eq!(e.reason_code(), "bad-signature");
}

#[test]
fn a_manifest_signed_by_another_key_fails() {
    let region = Region::new();
    let clinic = region.facility(CLINIC, Kind::Clinic, "さくら内科クリニック");
    let hospital = region.facility(HOSPITAL, Kind::Hospital, "みなと総合病院");
    let mallory = region.facility(OTHER, Kind::Clinic, "かもめ診療所");
    // Mallory, a certified member of the region, signs in the clinic's
    // name and attaches the clinic's certificate.
    let mut craft = Craft::new(&clinic, &[&hospital]);
    craft.signer = &mallory.key;
    let e = expect_refused(&hospital, &craft.build());
    assert!(matches!(e, OpenError::BadSignature), "{e:?}");

    // Mallory signs with her own key and certificate but claims to be the
    // clinic in the manifest.
    let mut craft = Craft::new(&mallory, &[&hospital]);
    let mut m = craft.manifest();
    m.sender.facility_id = clinic.id.clone();
    m.sender.name = clinic.cert.name.clone();
    craft.signer = &mallory.key;
    let e = expect_refused(&hospital, &craft.build_with(&m));
    assert!(matches!(e, OpenError::BadSignature), "{e:?}");
}

#[test]
fn a_malformed_signature_is_refused() {
    let (_region, clinic, hospital) = pair();
    let craft = Craft::new(&clinic, &[&hospital]);
    let m = craft.manifest();
    let (bytes, sig) = craft.sign(&m);
    // Short signature.
    let e = expect_refused(
        &hospital,
        &craft.encrypt(&craft.plaintext_raw(&bytes, &sig[..63])),
    );
    assert!(matches!(e, OpenError::BadSignature), "{e:?}");
    // One bit flipped.
    let mut bad = sig.clone();
    bad[10] ^= 0x04;
    let e = expect_refused(
        &hospital,
        &craft.encrypt(&craft.plaintext_raw(&bytes, &bad)),
    );
    assert!(matches!(e, OpenError::BadSignature), "{e:?}");
    // Signature over the manifest without the domain separation line.
    let raw_sig = clinic.key.sign(&bytes);
    let e = expect_refused(
        &hospital,
        &craft.encrypt(&craft.plaintext_raw(&bytes, &raw_sig)),
    );
    assert!(matches!(e, OpenError::BadSignature), "{e:?}");
}

#[test]
fn a_package_without_manifest_or_signature_is_refused() {
    let (_region, clinic, hospital) = pair();
    let entries = standard_entries(&clinic, &hospital);
    let e = expect_refused(
        &hospital,
        &encrypt(&tar_bytes(&entries), &[hospital.recipient()]),
    );
    assert_malformed(&e, "no manifest");

    let craft = Craft::new(&clinic, &[&hospital]);
    let (bytes, _) = craft.sign(&craft.manifest());
    let mut all = craft.entries.clone();
    all.push(RawEntry::file(package::MANIFEST_PATH, bytes));
    let e = expect_refused(
        &hospital,
        &encrypt(&tar_bytes(&all), &[hospital.recipient()]),
    );
    assert_malformed(&e, "no manifest signature");
}

#[test]
fn not_an_age_file_is_refused() {
    let (_region, clinic, hospital) = pair();
    for junk in [
        &b""[..],
        b"hello",
        b"age-encryption.org/v1\n",
        &[0u8; 4096][..],
    ] {
        let e = expect_refused(&hospital, junk);
        assert!(matches!(e, OpenError::Damaged), "{e:?}");
    }
    // A plain (unencrypted) tar of a genuine package is not accepted either.
    let craft = Craft::new(&clinic, &[&hospital]);
    let e = expect_refused(&hospital, &craft.plaintext_with(&craft.manifest()));
    assert!(matches!(e, OpenError::Damaged), "{e:?}");
}

#[test]
fn members_out_of_the_signed_order_are_refused() {
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    craft
        .entries
        .push(RawEntry::file("attachments/二つ目.txt", "2"));
    let members = member_entries(&craft.entries);
    // The stream holds the attachments swapped; the manifest the original
    // order.
    craft.entries.swap(1, 3);
    craft.members = Some(members);
    let e = expect_refused(&hospital, &craft.build());
    assert_malformed(&e, "not in the order");
}

#[test]
fn long_attachment_names_round_trip() {
    // Names longer than the 100-byte tar name field travel in GNU long-name
    // records; check around the boundary and at the longest allowed path.
    let (_region, clinic, hospital) = pair();
    let max_name = renkei::package::path::MAX_PATH_BYTES - "attachments/".len();
    let mut names = Vec::new();
    for len in [86usize, 87, 88, 89, 99, 100, 101, max_name] {
        names.push(format!("{}.txt", "a".repeat(len - 4)));
    }
    // 80 three-byte characters: 240 bytes of UTF-8.
    names.push(format!("{}.pdf", "診".repeat(79)));
    assert!(names.last().unwrap().len() <= max_name);
    let attachments = names
        .iter()
        .enumerate()
        .map(|(i, n)| mem(&format!("attachments/{n}"), format!("content {i}")))
        .collect();
    let (bytes, sealed) = seal_with(&clinic, &[&hospital], attachments, false);
    let (opened, attempt) = expect_opened(&hospital, &bytes);
    assert_eq!(opened.manifest, sealed.manifest);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            fs::read_to_string(attempt.out.join("attachments").join(n)).unwrap(),
            format!("content {i}"),
            "{n}"
        );
    }
    // One byte longer is refused when sealing.
    let too_long = format!("attachments/{}", "b".repeat(max_name + 1));
    let r = seal_referral(&clinic, &hospital, &[], vec![mem(&too_long, "x")]);
    assert!(
        matches!(r, Err(renkei::package::SealError::BadName(..))),
        "{r:?}"
    );
}

fn long_name_record(name: &[u8]) -> RawEntry {
    let mut data = name.to_vec();
    data.push(0);
    RawEntry {
        name: b"././@LongLink".to_vec(),
        kind: tar::EntryType::GNULongName,
        data,
        link: Vec::new(),
    }
}

#[test]
fn a_long_name_record_naming_an_unsafe_path_is_refused() {
    let (_region, clinic, hospital) = pair();
    let mut craft = Craft::new(&clinic, &[&hospital]);
    // The header says a harmless name, the long-name record an escape.
    craft
        .entries
        .insert(1, long_name_record(b"../../escape.txt"));
    craft
        .entries
        .insert(2, RawEntry::file("attachments/ok.txt", "x"));
    let e = expect_refused(&hospital, &craft.build());
    assert_malformed(&e, "unsafe member path");
}

#[test]
fn oversized_or_repeated_long_name_records_are_refused() {
    let (_region, clinic, hospital) = pair();
    let huge = format!("attachments/{}", "c".repeat(1000));
    let mut craft = Craft::new(&clinic, &[&hospital]);
    craft.entries.insert(1, long_name_record(huge.as_bytes()));
    craft
        .entries
        .insert(2, RawEntry::file("attachments/ok.txt", "x"));
    let e = expect_refused(&hospital, &craft.build());
    assert_malformed(&e, "too long");

    let mut craft = Craft::new(&clinic, &[&hospital]);
    craft
        .entries
        .insert(1, long_name_record(b"attachments/a.txt"));
    craft
        .entries
        .insert(2, long_name_record(b"attachments/b.txt"));
    craft
        .entries
        .insert(3, RawEntry::file("attachments/ok.txt", "x"));
    let e = expect_refused(&hospital, &craft.build());
    assert!(matches!(e, OpenError::Malformed(_)), "{e:?}");
}

#[test]
fn pax_headers_are_refused() {
    let (_region, clinic, hospital) = pair();
    for kind in [tar::EntryType::XHeader, tar::EntryType::XGlobalHeader] {
        let mut craft = Craft::new(&clinic, &[&hospital]);
        let record = b"30 path=attachments/pax.txt\n".to_vec();
        craft.entries.insert(
            1,
            RawEntry {
                name: b"PaxHeaders/x".to_vec(),
                kind,
                data: record,
                link: Vec::new(),
            },
        );
        craft
            .entries
            .insert(2, RawEntry::file("attachments/x.txt", "x"));
        let e = expect_refused(&hospital, &craft.build());
        assert_malformed(&e, "not a regular file");
    }
}

#[test]
fn open_refuses_an_existing_output_folder() {
    let (_region, clinic, hospital) = pair();
    let bytes = seal_simple(&clinic, &[&hospital]);
    let work = tempfile::tempdir().unwrap();
    let pkg = work.path().join("p.age");
    fs::write(&pkg, &bytes).unwrap();
    let out = work.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("keep.txt"), "mine").unwrap();
    let f = renkei::files::open_to_dir(&hospital.profile, std::fs::File::open(&pkg).unwrap(), &out)
        .unwrap_err();
    assert!(!f.is_verification_failure());
    assert!(f.to_string().contains("already exists"), "{f}");
    assert_eq!(listing(&out), vec!["keep.txt"]);
}

#[test]
fn a_failed_final_rename_leaves_no_staging_folder() {
    // The output name is too long for the file system: the package opens
    // and verifies in the staging folder beside it, then the rename fails.
    let (_region, clinic, hospital) = pair();
    let bytes = seal_simple(&clinic, &[&hospital]);
    let work = tempfile::tempdir().unwrap();
    let pkg = work.path().join("p.age");
    fs::write(&pkg, &bytes).unwrap();
    let parent = work.path().join("inbox");
    fs::create_dir(&parent).unwrap();
    let out = parent.join("x".repeat(300));
    let f = renkei::files::open_to_dir(&hospital.profile, std::fs::File::open(&pkg).unwrap(), &out)
        .unwrap_err();
    assert!(!f.is_verification_failure(), "{f}");
    assert!(
        fs::read_dir(&parent).unwrap().next().is_none(),
        "nothing may be left beside the output: {:?}",
        listing(&parent)
    );
}

#[test]
fn package_thread_and_reply_ids_must_be_canonical_uuids() {
    let (_region, clinic, hospital) = pair();
    let craft = Craft::new(&clinic, &[&hospital]);
    let m = craft.manifest();
    let id = m.package_id.clone();
    let variants = [
        id.to_uppercase(),
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
        id.replace('-', ""),
    ];
    for v in &variants {
        for field in ["package", "thread", "reply"] {
            let mut m = m.clone();
            match field {
                "package" => m.package_id = v.clone(),
                "thread" => m.thread_id = v.clone(),
                _ => m.in_reply_to = Some(v.clone()),
            }
            let e = expect_refused(&hospital, &craft.build_with(&m));
            assert!(matches!(e, OpenError::Malformed(_)), "{field} {v}: {e:?}");
        }
    }
}

#[test]
fn sealing_writes_a_user_given_thread_id_in_canonical_form() {
    let (_region, clinic, hospital) = pair();
    let thread = "3F2C8A4E-0B1D-4C55-9A7E-2D6F1B0C9E41";
    let doc = document_for(
        renkei::document::DocKind::Referral,
        clinic.id.as_str(),
        hospital.id.as_str(),
        &[],
    );
    let mut out = Vec::new();
    let sealed = package::seal(
        package::SealRequest {
            sender_key: &clinic.key,
            sender_cert: &clinic.cert,
            sender_copy: true,
            recipients: std::slice::from_ref(&hospital.cert),
            kind: package::PackageKind::Referral,
            thread_id: Some(thread.into()),
            in_reply_to: None,
            document: document(doc),
            attachments: vec![],
            limits: Limits::default(),
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(sealed.manifest.thread_id, thread.to_lowercase());
    let (opened, _) = expect_opened(&hospital, &out);
    assert_eq!(opened.manifest.thread_id, thread.to_lowercase());
}

/// The tar records inside the age payload are damage whenever they do not
/// add up: a header whose checksum is wrong, a stream that ends inside a
/// header or inside a member's data, a size that overflows. The opened
/// folder is never released.
#[test]
fn tar_records_that_do_not_add_up_are_damage() {
    let (_region, clinic, hospital) = pair();
    let plain = decrypt(&seal_simple(&clinic, &[&hospital]), &hospital);
    assert!(plain.len() > 2048);
    // The reader and the sender's own copy, as the manifest says.
    let readers = [hospital.recipient(), clinic.recipient()];
    let refused = |tar: &[u8], what: &str| {
        let e = expect_refused(&hospital, &encrypt(tar, &readers));
        assert!(matches!(e, OpenError::Damaged), "{what}: {e:?}");
    };

    // A changed name without its checksum fixed.
    let mut t = plain.clone();
    t[0] ^= 0x01;
    refused(&t, "first header's checksum");

    // Ends inside the first header, right after it, and inside the
    // second record's header.
    let first_size = tar::Header::from_byte_slice(&plain[..512])
        .entry_size()
        .unwrap();
    let second = 512 + first_size.next_multiple_of(512) as usize;
    for cut in [100, 512, 512 + 1, second + 300] {
        refused(&plain[..cut], &format!("cut at {cut}"));
    }

    // A record whose size (GNU base-256) reaches the end of u64: the end
    // of its data cannot be computed.
    let mut t = plain.clone();
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&t[..512]);
    h.set_size(u64::MAX);
    h.set_cksum();
    t[..512].copy_from_slice(h.as_bytes());
    refused(&t, "size u64::MAX");

    // The untouched inner tar, encrypted again, still opens (the cases
    // above fail for what they change).
    expect_opened(&hospital, &encrypt(&plain, &readers));
}
