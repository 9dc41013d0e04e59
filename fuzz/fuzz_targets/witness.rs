//! The witness protocol parsers (add-checkpoint request bodies, 409 size
//! bodies, cosignature lines, witness verifier keys, and cosigned
//! checkpoints under a quorum) through `renkei::log::fuzzing::witness`, and
//! C2SP tlog-proof texts through `renkei::log::fuzzing::tlog_proof`:
//! each asserts that an accepted input re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    renkei::log::fuzzing::witness(data);
    renkei::log::fuzzing::tlog_proof(data);
});
