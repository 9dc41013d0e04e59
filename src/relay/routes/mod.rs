//! The relay's HTTP API under `/v1/` (docs/API.md). Each module offers its
//! own `router()`.

pub mod directory;
pub mod envelopes;
pub mod health;
pub mod log;
pub mod log_keys;

use super::error::ApiError;
use super::Caller;
use crate::identity::FacilityId;

/// The caller as a facility, or 403.
pub fn facility(c: &Caller) -> Result<FacilityId, ApiError> {
    c.0.id.facility().cloned().ok_or_else(|| {
        ApiError::forbidden(format!(
            "a {} certificate cannot do this; use a facility's certificate",
            c.0.kind
        ))
    })
}
