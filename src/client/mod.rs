//! The facility side of the relay: a mutual-TLS HTTP client, the local
//! store of sent and received packages and receipts, and the operations
//! behind `send`, `inbox`, `receive`, `status` and `directory`.

pub mod http;
pub mod ops;
pub mod store;

pub use http::{ClientError, RelayClient};
