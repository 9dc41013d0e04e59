//! Auditing: the auditor that follows the relay's log and proves it
//! append-only, and its reports. Receipt bundles are in [`crate::receipt::bundle`].

pub mod report;
pub mod sync;
