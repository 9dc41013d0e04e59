//! Benchmark helper (bench/audit-sync.sh): the bare limit for the auditor —
//! N ring Ed25519 verifications of receipt-sized messages over all cores
//! (std::thread::scope, one chunk per core), nothing else. Prints one JSON
//! line: {"signatures": N, "threads": T, "seconds": S, "per_second": R}.
//!
//!   cargo run --release --example ed25519_baseline -- [N] [THREADS]

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|s| s.parse().expect("N"))
        .unwrap_or(100_000);
    let threads: usize = args
        .next()
        .map(|s| s.parse().expect("THREADS"))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    let rng = ring::rand::SystemRandom::new();
    let keys: Vec<Ed25519KeyPair> = (0..3)
        .map(|_| {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
            Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("key")
        })
        .collect();
    // Messages the size of a receipt (context string + JSON body, ~300 bytes).
    let jobs: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| {
            let k = &keys[i % keys.len()];
            let msg = format!(
                "renkei-receipt-v1:submission\n{{\"envelope_id\":\"{:064x}\",\"size\":{},\"sender\":\"1311234569\",\"sender_cert_sha256\":\"{:064x}\",\"recipients\":[\"1317654323\"],\"submitted_at\":\"2026-01-01T00:00:00Z\"}}",
                i, 4096 + i, i * 7
            )
            .into_bytes();
            let sig = k.sign(&msg).as_ref().to_vec();
            (k.public_key().as_ref().to_vec(), msg, sig)
        })
        .collect();
    let chunk = n.div_ceil(threads).max(1);
    let t0 = std::time::Instant::now();
    let ok: usize = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter(|(pk, m, sig)| {
                            UnparsedPublicKey::new(&ED25519, pk).verify(m, sig).is_ok()
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(ok, n, "every signature verifies");
    println!(
        "{{\"signatures\": {n}, \"threads\": {threads}, \"seconds\": {secs:.4}, \"per_second\": {:.0}}}",
        n as f64 / secs
    );
}
