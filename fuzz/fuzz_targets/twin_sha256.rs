//! `renkei-twin-sha256` (sealing's two SHA-256 streams side by side) on
//! arbitrary bytes cut into two streams and arbitrary pieces, checked
//! against ring's SHA-256 of each stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei_twin_sha256::{update_pair, Sha256};

fuzz_target!(|data: &[u8]| {
    // Byte 0: where the two streams split; bytes 1 and 2: their piece
    // sizes (scaled so that pieces of several blocks occur).
    let [cut, pa, pb, rest @ ..] = data else {
        return;
    };
    let cut = (usize::from(*cut) * rest.len()) / 255;
    let (x, y) = rest.split_at(cut);
    let (pa, pb) = (usize::from(*pa) * 3 + 1, usize::from(*pb) * 3 + 1);
    let mut a = Sha256::new();
    let mut b = Sha256::new();
    let (mut xs, mut ys) = (x.chunks(pa), y.chunks(pb));
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => break,
            (p, q) => update_pair(&mut a, p.unwrap_or(&[]), &mut b, q.unwrap_or(&[])),
        }
    }
    assert_eq!(
        a.finish()[..],
        ring::digest::digest(&ring::digest::SHA256, x).as_ref()[..]
    );
    assert_eq!(
        b.finish()[..],
        ring::digest::digest(&ring::digest::SHA256, y).as_ref()[..]
    );
});
