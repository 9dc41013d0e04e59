//! Auditing: receipt bundles that verify offline, and the auditor that
//! follows the relay's log and proves it append-only.

pub mod bundle;
pub mod report;
pub mod sync;

pub use bundle::{ReceiptBundle, Verified};
