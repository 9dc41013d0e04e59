//! renkei (連携): end-to-end encrypted exchange of referral letters and
//! clinical documents between the medical facilities of a region.
//!
//! The pure format and crypto layers ([`identity`], [`keys`], [`pki`],
//! [`package`], [`document`], [`log`], [`receipt`]) do no network I/O; the
//! CLI and profile code do the file I/O around them. The network, database
//! and web parts (`relay`, `client`, `audit`, `desk`) need the default
//! Cargo feature `net`; `--no-default-features` builds only the pure
//! modules (the fuzz targets do).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
#[cfg(feature = "net")]
pub mod audit;
#[cfg(feature = "net")]
pub mod client;
#[cfg(feature = "net")]
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
#[cfg(feature = "net")]
pub mod relay;
#[cfg(feature = "net")]
pub mod witness;
pub mod writeback;
