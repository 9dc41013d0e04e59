//! renkei (連携): end-to-end encrypted exchange of referral letters and
//! clinical documents between the medical facilities of a region.
//!
//! The pure format and crypto layers ([`identity`], [`keys`], [`pki`],
//! [`package`]) do no network I/O; the CLI and profile code do the file
//! I/O around them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod client;
pub mod desk;
pub mod document;
pub mod files;
pub mod identity;
pub mod keys;
pub mod log;
pub mod package;
pub mod pki;
pub mod profile;
pub mod receipt;
pub mod relay;
pub mod witness;
