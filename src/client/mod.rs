//! The facility side of the relay: a mutual-TLS HTTP client, the local
//! store of sent and received packages and receipts, the operations behind
//! `send`, `inbox`, `receive`, `status` and `directory`, and the referral
//! threads behind `referrals`.

pub mod http;
pub mod ops;
pub mod store;
pub mod threads;

pub use http::{ClientError, RelayClient};
