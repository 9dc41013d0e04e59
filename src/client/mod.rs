//! The facility side of the relay: a mutual-TLS HTTP client, the local
//! store of sent and received packages and receipts, the operations behind
//! `send` and the outbox, `inbox`, `receive`, `status` and `directory`,
//! and the referral threads behind `referrals`. The CLI and the desk both
//! call these operations.

pub mod http;
pub mod log_keys;
pub mod monitor;
pub mod ops;
pub mod outbox;
pub mod receive;
pub mod send;
pub mod status;
pub mod store;
pub mod threads;

pub use http::{ClientError, RelayClient};
