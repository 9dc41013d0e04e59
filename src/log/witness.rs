//! C2SP tlog-witness (<https://c2sp.org/tlog-witness>) messages, as pure
//! parsers and encoders; the witness server is `crate::witness`, the
//! relay's client `crate::relay::witnesses`.
//!
//! `POST <prefix>/add-checkpoint` request body:
//!
//! ```text
//! old <size>\n                 decimal, no leading zero (0 is "0")
//! <base64 hash>\n ...          0 to 63 consistency proof lines
//! \n
//! <signed checkpoint>          a signed note
//! ```
//!
//! A 409 answer's body (`Content-Type: text/x.tlog.size`) is the witness's
//! current size in decimal and a newline; a 200 answer's body is one or
//! more signature lines ([`super::cosignature::parse_signature_lines`]).

use base64::Engine as _;

use super::merkle::Hash;
use super::note::MAX_NOTE_BYTES;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Most consistency proof lines in a request (the spec's limit).
pub const MAX_PROOF_LINES: usize = 63;

/// Largest request body accepted: the proof lines and a note.
pub const MAX_REQUEST_BYTES: usize = MAX_NOTE_BYTES + 64 * 46;

/// The content type of a 409 answer.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// Why a witness message was refused (a 400 from a witness).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed witness message: {0}")]
pub struct MessageError(pub &'static str);

/// An add-checkpoint request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the client believes the witness has.
    pub old_size: u64,
    /// Consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint (a signed note, not yet parsed or verified).
    pub checkpoint: String,
}

/// ASCII decimal `u64`, no sign, no leading zero (except "0").
pub fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

impl AddCheckpoint {
    /// Parse an untrusted request body (syntax only: the checkpoint is
    /// checked by the witness).
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, MessageError> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(MessageError("request too large"));
        }
        let s = std::str::from_utf8(body).map_err(|_| MessageError("not UTF-8"))?;
        let (head, checkpoint) = s
            .split_once("\n\n")
            .ok_or(MessageError("no empty line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or(MessageError("the first line is not \"old <size>\""))?;
        let old_size =
            parse_decimal(old).ok_or(MessageError("the old size is not a canonical decimal"))?;
        let mut proof = Vec::new();
        for l in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(MessageError("more than 63 consistency proof lines"));
            }
            let h: Hash = B64
                .decode(l)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or(MessageError("a proof line is not base64 of 32 bytes"))?;
            proof.push(h);
        }
        if checkpoint.is_empty() {
            return Err(MessageError("no checkpoint"));
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            checkpoint: checkpoint.to_string(),
        })
    }

    /// The request body.
    pub fn encode(&self) -> Result<String, MessageError> {
        if self.proof.len() > MAX_PROOF_LINES {
            return Err(MessageError("more than 63 consistency proof lines"));
        }
        if self.checkpoint.is_empty() {
            return Err(MessageError("no checkpoint"));
        }
        let mut s = format!("old {}\n", self.old_size);
        for h in &self.proof {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        Ok(s)
    }
}

/// Parse a 409 answer's body: `<size>\n`.
pub fn parse_size_body(body: &[u8]) -> Result<u64, MessageError> {
    if body.len() > 21 {
        return Err(MessageError("size body too long"));
    }
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .and_then(parse_decimal)
        .ok_or(MessageError("not a tree size and a newline"))
}

/// A 409 answer's body.
pub fn encode_size_body(size: u64) -> String {
    format!("{size}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CP: &str = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";

    #[test]
    fn request_roundtrip_and_refusals() {
        let h = B64.encode([7u8; 32]);
        let ok = format!("old 5\n{h}\n{h}\n\n{CP}");
        let r = AddCheckpoint::parse(ok.as_bytes()).unwrap();
        assert_eq!(r.old_size, 5);
        assert_eq!(r.proof, vec![[7u8; 32]; 2]);
        assert_eq!(r.checkpoint, CP);
        assert_eq!(r.encode().unwrap(), ok);
        let zero = format!("old 0\n\n{CP}");
        assert_eq!(AddCheckpoint::parse(zero.as_bytes()).unwrap().old_size, 0);
        let sixty_three = format!("old 1\n{}\n{CP}", format!("{h}\n").repeat(63));
        assert_eq!(
            AddCheckpoint::parse(sixty_three.as_bytes())
                .unwrap()
                .proof
                .len(),
            63
        );
        for bad in [
            String::new(),
            format!("old 5\n{h}\n{CP}"),
            format!("old 05\n\n{CP}"),
            format!("old -1\n\n{CP}"),
            format!("old +1\n\n{CP}"),
            format!("old  1\n\n{CP}"),
            format!("Old 1\n\n{CP}"),
            format!("old 1 \n\n{CP}"),
            format!("old\n\n{CP}"),
            format!("old 18446744073709551616\n\n{CP}"),
            format!("old 1\n{}\n\n{CP}", &h[..43]),
            format!("old 1\n{h}=\n\n{CP}"),
            format!("old 1\nAAAA\n\n{CP}"),
            format!("old 1\n{}\n{CP}", format!("{h}\n").repeat(64)),
            "old 1\n\n".to_string(),
            format!("\nold 1\n\n{CP}"),
            format!("old 1\r\n\n{CP}"),
        ] {
            assert!(AddCheckpoint::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let mut not_utf8 = format!("old 1\n\n{CP}").into_bytes();
        not_utf8.push(0xff);
        assert!(AddCheckpoint::parse(&not_utf8).is_err());
    }

    #[test]
    fn size_bodies() {
        assert_eq!(parse_size_body(b"0\n"), Ok(0));
        assert_eq!(parse_size_body(b"20852014\n"), Ok(20852014));
        assert_eq!(parse_size_body(b"18446744073709551615\n"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"\n",
            b"1",
            b"01\n",
            b"1\n\n",
            b" 1\n",
            b"1 \n",
            b"-1\n",
            b"18446744073709551616\n",
            b"1\r\n",
            b"0x10\n",
        ] {
            assert!(parse_size_body(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(r) = AddCheckpoint::parse(&bytes) {
                prop_assert_eq!(r.encode().unwrap().into_bytes(), bytes.clone());
            }
            if let Ok(n) = parse_size_body(&bytes) {
                prop_assert_eq!(encode_size_body(n).into_bytes(), bytes);
            }
        }

        #[test]
        fn roundtrips(old: u64, proof in proptest::collection::vec(any::<[u8; 32]>(), 0..63)) {
            let r = AddCheckpoint { old_size: old, proof, checkpoint: CP.to_string() };
            let e = r.encode().unwrap();
            prop_assert_eq!(AddCheckpoint::parse(e.as_bytes()).unwrap(), r);
            prop_assert_eq!(parse_size_body(encode_size_body(old).as_bytes()).unwrap(), old);
        }
    }
}
