//! SHA-256 (FIPS 180-4) of two independent byte streams at once, for the
//! x86-64 SHA extensions.
//!
//! One stream's 64 rounds per block are a chain of `sha256rnds2`
//! instructions, each waiting for the one before; on the processors
//! measured here the SHA unit could start another one meanwhile.
//! [`update_pair`] steps a block of each stream through the rounds side by
//! side, so that the second stream's instructions fill those waits: the
//! two digests cost less than two separate passes. Where the processor
//! lacks the extensions, or only one stream has data, each stream is
//! hashed by ring.
//!
//! Sealing uses it to hash each batch's member bytes (for the manifest)
//! beside an earlier batch's ciphertext (for the envelope ID): on the AMD
//! EPYC measured, two 512 MiB streams took 0.37-0.42 s side by side
//! against 0.65-0.70 s for ring's two passes.
//!
//! The only `unsafe` of renkei lives here, in a crate of its own, so that
//! the main crate keeps `#![forbid(unsafe_code)]`: the calls into the
//! functions compiled for the SHA extensions, made only after the
//! processor was found to have them, and the loads of 16 bytes from
//! blocks known to hold 64.
//!
//! The result is plain SHA-256; the tests compare it with ring's on every
//! split of the input, and every sealed package is checked by ring when it
//! is opened.

use ring::digest;

/// SHA-256's round constants (FIPS 180-4, 4.2.2).
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

const BLOCK: usize = 64;

/// Whether this processor has what [`update_pair`]'s paired rounds need.
fn paired_rounds() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A SHA-256 computation in progress.
pub struct Sha256 {
    inner: Inner,
}

enum Inner {
    /// Our own state, for the paired rounds.
    Paired {
        state: [u32; 8],
        /// The bytes of an unfinished block.
        partial: [u8; BLOCK],
        held: usize,
        /// Bytes hashed so far.
        total: u64,
    },
    /// ring's, where the processor lacks the SHA extensions.
    Ring(digest::Context),
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Sha256 {
        let inner = if paired_rounds() {
            Inner::Paired {
                state: H0,
                partial: [0; BLOCK],
                held: 0,
                total: 0,
            }
        } else {
            Inner::Ring(digest::Context::new(&digest::SHA256))
        };
        Sha256 { inner }
    }

    /// Hash `data` after what came before.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Ring(c) => c.update(data),
            Inner::Paired { .. } => {
                let rest = self.fill_partial(data);
                if rest.is_empty() {
                    return;
                }
                let (blocks, tail) = rest.split_at(rest.len() / BLOCK * BLOCK);
                if let Inner::Paired {
                    state,
                    partial,
                    held,
                    total,
                } = &mut self.inner
                {
                    one_stream(state, blocks);
                    *total += blocks.len() as u64;
                    partial[..tail.len()].copy_from_slice(tail);
                    *held = tail.len();
                    *total += tail.len() as u64;
                }
            }
        }
    }

    /// Complete an unfinished block from the front of `data`; return what
    /// is left of `data` (everything when no block was unfinished, nothing
    /// when `data` did not complete it).
    fn fill_partial<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let Inner::Paired {
            state,
            partial,
            held,
            total,
        } = &mut self.inner
        else {
            return data;
        };
        if *held == 0 {
            return data;
        }
        let n = data.len().min(BLOCK - *held);
        partial[*held..*held + n].copy_from_slice(&data[..n]);
        *held += n;
        *total += n as u64;
        if *held < BLOCK {
            return &[];
        }
        one_stream(state, &partial[..]);
        *held = 0;
        &data[n..]
    }

    /// The digest of everything hashed.
    pub fn finish(self) -> [u8; 32] {
        match self.inner {
            Inner::Ring(c) => {
                let mut d = [0u8; 32];
                d.copy_from_slice(c.finish().as_ref());
                d
            }
            Inner::Paired {
                mut state,
                partial,
                held,
                total,
            } => {
                // FIPS 180-4, 5.1.1: a one bit, zeros, the length in bits.
                let mut last = [0u8; 2 * BLOCK];
                last[..held].copy_from_slice(&partial[..held]);
                last[held] = 0x80;
                let end = if held < BLOCK - 8 { BLOCK } else { 2 * BLOCK };
                last[end - 8..end].copy_from_slice(&(total * 8).to_be_bytes());
                one_stream(&mut state, &last[..end]);
                let mut d = [0u8; 32];
                for (out, word) in d.chunks_exact_mut(4).zip(state) {
                    out.copy_from_slice(&word.to_be_bytes());
                }
                d
            }
        }
    }
}

/// Hash `a_data` into `a` and `b_data` into `b`, the whole blocks of the
/// two side by side.
pub fn update_pair(a: &mut Sha256, a_data: &[u8], b: &mut Sha256, b_data: &[u8]) {
    if !matches!(
        (&a.inner, &b.inner),
        (Inner::Paired { .. }, Inner::Paired { .. })
    ) {
        a.update(a_data);
        b.update(b_data);
        return;
    }
    let a_rest = a.fill_partial(a_data);
    let b_rest = b.fill_partial(b_data);
    let both = (a_rest.len() / BLOCK).min(b_rest.len() / BLOCK) * BLOCK;
    if let (
        Inner::Paired {
            state: sa,
            total: ta,
            ..
        },
        Inner::Paired {
            state: sb,
            total: tb,
            ..
        },
    ) = (&mut a.inner, &mut b.inner)
    {
        // SAFETY: `paired_rounds` found the SHA extensions, SSSE3 and
        // SSE4.1 when both states were made.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::compress_pair(sa, &a_rest[..both], sb, &b_rest[..both]);
        }
        *ta += both as u64;
        *tb += both as u64;
    }
    a.update(&a_rest[both..]);
    b.update(&b_rest[both..]);
}

/// Whole blocks of one stream.
fn one_stream(state: &mut [u32; 8], blocks: &[u8]) {
    if blocks.is_empty() {
        return;
    }
    // SAFETY: as in `update_pair`: only `Paired` states reach here.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::compress_one(state, blocks);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, K};
    use std::arch::x86_64::*;

    /// The state as the SHA instructions hold it: words A, B, E, F and
    /// C, D, G, H.
    #[derive(Clone, Copy)]
    struct Lanes {
        abef: __m128i,
        cdgh: __m128i,
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn load(state: &[u32; 8]) -> Lanes {
        let abcd = _mm_loadu_si128(state.as_ptr().cast());
        let efgh = _mm_loadu_si128(state.as_ptr().add(4).cast());
        let cdab = _mm_shuffle_epi32(abcd, 0xB1);
        let hgfe = _mm_shuffle_epi32(efgh, 0x1B);
        Lanes {
            abef: _mm_alignr_epi8(cdab, hgfe, 8),
            cdgh: _mm_blend_epi16(hgfe, cdab, 0xF0),
        }
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn store(l: Lanes, state: &mut [u32; 8]) {
        let feba = _mm_shuffle_epi32(l.abef, 0x1B);
        let dchg = _mm_shuffle_epi32(l.cdgh, 0xB1);
        let abcd = _mm_blend_epi16(feba, dchg, 0xF0);
        let efgh = _mm_alignr_epi8(dchg, feba, 8);
        _mm_storeu_si128(state.as_mut_ptr().cast(), abcd);
        _mm_storeu_si128(state.as_mut_ptr().add(4).cast(), efgh);
    }

    /// One block's 64 rounds for each of `N` streams, the streams' steps
    /// interleaved.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn rounds<const N: usize>(lanes: &mut [Lanes; N], blocks: [*const u8; N]) {
        let swap = _mm_set_epi64x(0x0c0d0e0f08090a0b, 0x0405060700010203);
        let saved = *lanes;
        let mut w = [[_mm_setzero_si128(); 4]; N];
        // Four rounds per step, the sixteen steps written out so that the
        // message words stay in registers.
        macro_rules! step {
            ($g:expr) => {{
                let g: usize = $g;
                let k = _mm_loadu_si128(K.as_ptr().add(4 * g).cast());
                for s in 0..N {
                    if g < 4 {
                        let m = _mm_loadu_si128(blocks[s].add(16 * g).cast());
                        w[s][g] = _mm_shuffle_epi8(m, swap);
                    }
                    let m = _mm_add_epi32(w[s][g % 4], k);
                    lanes[s].cdgh = _mm_sha256rnds2_epu32(lanes[s].cdgh, lanes[s].abef, m);
                    if (3..=14).contains(&g) {
                        let next = (g + 1) % 4;
                        let t = _mm_alignr_epi8(w[s][g % 4], w[s][(g + 3) % 4], 4);
                        w[s][next] =
                            _mm_sha256msg2_epu32(_mm_add_epi32(w[s][next], t), w[s][g % 4]);
                    }
                    let m = _mm_shuffle_epi32(m, 0x0E);
                    lanes[s].abef = _mm_sha256rnds2_epu32(lanes[s].abef, lanes[s].cdgh, m);
                    if (1..=12).contains(&g) {
                        let prev = (g + 3) % 4;
                        w[s][prev] = _mm_sha256msg1_epu32(w[s][prev], w[s][g % 4]);
                    }
                }
            }};
        }
        step!(0);
        step!(1);
        step!(2);
        step!(3);
        step!(4);
        step!(5);
        step!(6);
        step!(7);
        step!(8);
        step!(9);
        step!(10);
        step!(11);
        step!(12);
        step!(13);
        step!(14);
        step!(15);
        for s in 0..N {
            lanes[s].abef = _mm_add_epi32(lanes[s].abef, saved[s].abef);
            lanes[s].cdgh = _mm_add_epi32(lanes[s].cdgh, saved[s].cdgh);
        }
    }

    /// The blocks of one stream (`blocks.len()` a multiple of 64).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_one(state: &mut [u32; 8], blocks: &[u8]) {
        let mut l = [load(state)];
        for block in blocks.chunks_exact(BLOCK) {
            rounds(&mut l, [block.as_ptr()]);
        }
        store(l[0], state);
    }

    /// The blocks of two streams side by side (the same number of whole
    /// blocks each).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_pair(a: &mut [u32; 8], ab: &[u8], b: &mut [u32; 8], bb: &[u8]) {
        debug_assert_eq!(ab.len(), bb.len());
        let mut l = [load(a), load(b)];
        for (x, y) in ab.chunks_exact(BLOCK).zip(bb.chunks_exact(BLOCK)) {
            rounds(&mut l, [x.as_ptr(), y.as_ptr()]);
        }
        store(l[0], a);
        store(l[1], b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(d: &[u8]) -> [u8; 32] {
        let mut o = [0u8; 32];
        o.copy_from_slice(digest::digest(&digest::SHA256, d).as_ref());
        o
    }

    fn data(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn one_stream_matches_ring_at_every_padding_boundary() {
        let d = data(300, 1);
        for len in 0..d.len() {
            let mut h = Sha256::new();
            h.update(&d[..len]);
            assert_eq!(h.finish(), ring(&d[..len]), "{len}");
        }
        // In pieces of every size up to two blocks.
        let d = data(1000, 2);
        for piece in 1..130 {
            let mut h = Sha256::new();
            for p in d.chunks(piece) {
                h.update(p);
            }
            assert_eq!(h.finish(), ring(&d), "{piece}");
        }
    }

    #[test]
    fn two_streams_side_by_side_match_ring_at_every_split() {
        let (x, y) = (data(5000, 3), data(4000, 4));
        for head in [0usize, 1, 7, 55, 56, 63, 64, 65, 200] {
            for pair in [0usize, 1, 63, 64, 65, 640, 3000] {
                let mut a = Sha256::new();
                let mut b = Sha256::new();
                a.update(&x[..head]);
                b.update(&y[..head / 2]);
                update_pair(
                    &mut a,
                    &x[head..head + pair],
                    &mut b,
                    &y[head / 2..head / 2 + pair + 13],
                );
                update_pair(&mut a, &x[head + pair..], &mut b, &[]);
                update_pair(&mut a, &[], &mut b, &y[head / 2 + pair + 13..]);
                assert_eq!(a.finish(), ring(&x), "{head} {pair}");
                assert_eq!(b.finish(), ring(&y), "{head} {pair}");
            }
        }
    }

    #[test]
    fn the_fips_examples() {
        // FIPS 180-4 examples (NIST CSRC, SHA256.pdf): "abc" and the
        // two-block message.
        let mut h = Sha256::new();
        h.update(b"abc");
        assert_eq!(
            hex::encode(h.finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut a = Sha256::new();
        let mut b = Sha256::new();
        update_pair(
            &mut a,
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            &mut b,
            b"abc",
        );
        assert_eq!(
            hex::encode(a.finish()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex::encode(b.finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
