//! Phase timings behind bench/seal-open.sh (perf is not installed here):
//! each building block of sealing and opening, alone, on the same
//! in-memory plaintext, so that docs/BENCHMARKS.md can say where the time
//! goes. Not a test; run with
//!
//!   cargo run --release --example payload_phases [MiB]
//!
//! and read it beside `uptime` (other work on the machine skews it).

use std::io::{Read, Write};
use std::time::Instant;

use renkei::package::{header, payload};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("MiB"))
        .unwrap_or(256);
    let n = mib << 20;
    let plain: Vec<u8> = (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect();
    let rate = |what: &str, t: Instant| {
        let s = t.elapsed().as_secs_f64();
        println!("{what:<48} {s:7.3} s  {:8.0} MiB/s", mib as f64 / s);
    };

    let t = Instant::now();
    let d = ring::digest::digest(&ring::digest::SHA256, &plain);
    rate("SHA-256 (ring), one pass", t);
    std::hint::black_box(d);

    let t = Instant::now();
    let mut copy = vec![0u8; n];
    copy.copy_from_slice(&plain);
    rate("memcpy", t);

    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[7u8; 32]).unwrap(),
    );
    let t = Instant::now();
    for (i, c) in copy.chunks_mut(64 * 1024).enumerate() {
        let mut nonce = [0u8; 12];
        nonce[3..11].copy_from_slice(&(i as u64).to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                c,
            )
            .unwrap();
        let _ = std::hint::black_box(tag);
    }
    rate("ChaCha20-Poly1305 (ring), 64 KiB chunks, 1 core", t);

    let id = age::x25519::Identity::generate();
    let r = id.to_public();
    let t = Instant::now();
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
    let mut theirs = Vec::with_capacity(n + n / 1000 + 4096);
    let mut w = enc.wrap_output(&mut theirs).unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap();
    rate("age crate 0.11 encrypt (header + STREAM)", t);

    let t = Instant::now();
    let d = age::Decryptor::new(&theirs[..]).unwrap();
    let mut out = Vec::with_capacity(n);
    d.decrypt(std::iter::once(&id as &dyn age::Identity))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    rate("age crate 0.11 decrypt", t);
    drop(out);

    let t = Instant::now();
    let fk = header::new_file_key();
    let head = header::write(&fk, &[&r]).unwrap();
    let ours = payload::encrypt(Vec::with_capacity(n + n / 1000 + 4096), &fk, &head, |e| {
        e.write_all(&plain)
    })
    .unwrap()
    .out;
    rate("renkei payload encrypt + SHA-256 of output, 3 threads", t);

    let t = Instant::now();
    let h = header::parse(&ours).unwrap();
    let fk = h.unwrap(&ours, &id).ok().unwrap();
    let mut out = Vec::with_capacity(n);
    std::thread::scope(|s| payload::Decryptor::new(s, &ours[h.len..], fk).read_to_end(&mut out))
        .unwrap();
    rate("renkei payload decrypt, 2 threads", t);
    assert!(out == plain);

    let t = Instant::now();
    let h = header::parse(&ours).unwrap();
    let fk = h.unwrap(&ours, &id).ok().unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    std::thread::scope(|s| {
        let mut d = payload::Decryptor::new(s, &ours[h.len..], fk);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let k = d.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            ctx.update(&buf[..k]);
        }
    });
    std::hint::black_box(ctx.finish());
    rate("renkei payload decrypt + SHA-256 of plaintext", t);
}
