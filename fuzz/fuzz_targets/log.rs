//! The transparency-log parsers (signed notes, verifier keys, checkpoints,
//! tile paths, entry bundles and tiles, proofs) through the entry points
//! the log module provides in `renkei::log::fuzzing`, and the log's
//! key-transition entry and transition proof
//! (`renkei::receipt::key_transition::fuzz`): each asserts that an
//! accepted input re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    renkei::log::fuzzing::all(data);
    renkei::receipt::key_transition::fuzz(data);
});
