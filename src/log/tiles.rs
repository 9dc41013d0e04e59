//! C2SP tlog-tiles (<https://c2sp.org/tlog-tiles>): tile paths, hash tiles
//! and entry bundles.
//!
//! * Hash tile `tile/<L>/<N>[.p/<W>]`: the Merkle tree hashes at tree level
//!   `8·L`, indexes `N·256 .. N·256+W` (W = 256 for a full tile), each 32
//!   bytes, concatenated. In [`super::merkle`] terms, the nodes
//!   `(8·L, N·256 + i)` for `i` in `0..W`.
//! * Entry bundle `tile/entries/<N>[.p/<W>]`: log entries `N·256 ..
//!   N·256+W`, each as a big-endian `u16` length then the bytes.
//! * `<N>` is written in zero-padded groups of three digits, all but the
//!   last prefixed with `x` (1234067 → `x001/x234/067`). `<L>` is decimal
//!   0–63 and `<W>` decimal 1–255, without leading zeros.
//!
//! Paths here are relative to the log prefix and never start with `/`
//! (the relay serves them under `/v1/log/`).

use super::merkle::{self, Hash, NodeId, HASH_LEN};

/// Tree levels per tile.
pub const TILE_HEIGHT: u8 = 8;

/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u16 = 256;

/// Highest tile level a path may name (the spec allows 0–63; only levels
/// 0–7 can exist in a tree of at most `u64::MAX` leaves).
pub const MAX_TILE_LEVEL: u8 = 63;

/// Largest entry an entry bundle can hold (a `u16` length).
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;

/// Largest encoded entry bundle: 256 entries of the largest size.
pub const MAX_BUNDLE_BYTES: usize = TILE_WIDTH as usize * (2 + MAX_ENTRY_BYTES);

/// Why a tile path, tile or bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// The path is not a canonical tile path.
    #[error("malformed tile path: {0}")]
    BadPath(&'static str),
    /// A width outside 1..=256, or a level over 63.
    #[error("invalid tile coordinates: {0}")]
    BadCoordinates(&'static str),
    /// A tile's bytes are not `width` hashes.
    #[error("a tile of width {width} is {expected} bytes, got {got}")]
    BadTileLength {
        /// The tile's width.
        width: u16,
        /// `32 · width`.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// An entry bundle is malformed.
    #[error("malformed entry bundle: {0}")]
    BadBundle(&'static str),
    /// An entry bundle holds a different number of entries than expected.
    #[error("entry bundle holds {got} entries, expected {expected}")]
    BundleCount {
        /// The tile width.
        expected: usize,
        /// Entries found.
        got: usize,
    },
}

/// Hash tile or entry bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// A hash tile at tile level `L` (tree level `8·L`).
    Hashes {
        /// The tile level.
        level: u8,
    },
    /// An entry bundle.
    Entries,
}

/// The coordinates of a tile or entry bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TilePath {
    /// Hash tile or entry bundle.
    pub kind: TileKind,
    /// `N`, the tile's index within its level.
    pub index: u64,
    /// Number of hashes or entries: 256 for a full tile, 1–255 partial.
    pub width: u16,
}

impl TilePath {
    /// A hash tile.
    pub fn hashes(level: u8, index: u64, width: u16) -> Result<Self, TileError> {
        if level > MAX_TILE_LEVEL {
            return Err(TileError::BadCoordinates("tile level over 63"));
        }
        Self::checked(TileKind::Hashes { level }, index, width)
    }

    /// An entry bundle.
    pub fn entries(index: u64, width: u16) -> Result<Self, TileError> {
        Self::checked(TileKind::Entries, index, width)
    }

    fn checked(kind: TileKind, index: u64, width: u16) -> Result<Self, TileError> {
        if width == 0 || width > TILE_WIDTH {
            return Err(TileError::BadCoordinates("width must be 1 to 256"));
        }
        Ok(TilePath { kind, index, width })
    }

    /// Whether this is a partial tile (width under 256).
    pub fn is_partial(&self) -> bool {
        self.width < TILE_WIDTH
    }

    /// The path relative to the log prefix, e.g. `tile/0/x001/x234/067.p/8`.
    pub fn path(&self) -> String {
        let mut s = match self.kind {
            TileKind::Hashes { level } => format!("tile/{level}/"),
            TileKind::Entries => "tile/entries/".to_string(),
        };
        s.push_str(&encode_index(self.index));
        if self.is_partial() {
            s.push_str(&format!(".p/{}", self.width));
        }
        s
    }

    /// Parse an untrusted path relative to the log prefix (no leading `/`).
    /// Only the canonical form is accepted, so that each tile has one path.
    pub fn parse(path: &str) -> Result<Self, TileError> {
        if path.len() > 64 {
            return Err(TileError::BadPath("too long"));
        }
        let mut parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 3 || parts[0] != "tile" {
            return Err(TileError::BadPath(
                "expected tile/<L>/<N> or tile/entries/<N>",
            ));
        }
        let kind = match parts[1] {
            "entries" => TileKind::Entries,
            l => TileKind::Hashes {
                level: parse_small(l, MAX_TILE_LEVEL.into())
                    .ok_or(TileError::BadPath("the level must be 0 to 63"))?
                    as u8,
            },
        };
        let mut width = TILE_WIDTH;
        let n = parts.len();
        if n >= 4 {
            if let Some(last_n) = parts[n - 2].strip_suffix(".p") {
                width = parse_small(parts[n - 1], u64::from(TILE_WIDTH) - 1)
                    .filter(|&w| w >= 1)
                    .ok_or(TileError::BadPath("the width must be 1 to 255"))?
                    as u16;
                parts[n - 2] = last_n;
                parts.truncate(n - 1);
            }
        }
        let index = parse_index(&parts[2..])?;
        Ok(TilePath { kind, index, width })
    }

    /// For a hash tile: the tree level of its hashes and the node index of
    /// the first one; the tile holds nodes `(level, first .. first+width)`.
    /// `None` for entry bundles, and for tile levels whose nodes cannot
    /// exist (tree level 64 or more).
    pub fn node_range(&self) -> Option<(u8, u64, u64)> {
        let TileKind::Hashes { level } = self.kind else {
            return None;
        };
        let tree_level = u32::from(level) * u32::from(TILE_HEIGHT);
        if tree_level >= 64 {
            return None;
        }
        let first = self.index.checked_mul(u64::from(TILE_WIDTH))?;
        let end = first.checked_add(u64::from(self.width))?;
        Some((tree_level as u8, first, end))
    }

    /// For an entry bundle: the entry (leaf) indexes `[start, end)`.
    pub fn entry_range(&self) -> Option<(u64, u64)> {
        if self.kind != TileKind::Entries {
            return None;
        }
        let first = self.index.checked_mul(u64::from(TILE_WIDTH))?;
        Some((first, first.checked_add(u64::from(self.width))?))
    }

    /// The nodes this hash tile holds, in order (empty for a bundle).
    pub fn node_ids(&self) -> Vec<NodeId> {
        match self.node_range() {
            Some((level, a, b)) => (a..b).map(|i| NodeId::new(level, i)).collect(),
            None => Vec::new(),
        }
    }

    /// Whether everything in this tile exists in a tree of `size` leaves,
    /// i.e. whether a log of that size can serve it. (Partial tiles of any
    /// width that exists are servable: they are immutable facts; clients
    /// only ask for those a checkpoint implies.)
    pub fn is_available(&self, size: u64) -> bool {
        match self.kind {
            TileKind::Entries => matches!(self.entry_range(), Some((_, end)) if end <= size),
            TileKind::Hashes { .. } => match self.node_range() {
                Some((level, _, end)) => end <= size >> level,
                None => false,
            },
        }
    }

    /// The hash tile holding node `(level, index)` (tile level
    /// `level / 8`), as wide as needed to contain it, with the position and
    /// count of the tile hashes whose fold is the node
    /// ([`hash_from_tile`]).
    pub fn for_node(id: NodeId) -> Option<(TilePath, usize, usize)> {
        if id.level >= 64 {
            return None;
        }
        let tile_level = id.level / TILE_HEIGHT;
        let base = tile_level * TILE_HEIGHT;
        let rel = id.level - base; // 0..=7
        let first = id.index.checked_shl(u32::from(rel))?;
        if first >> rel != id.index {
            return None;
        }
        let count = 1usize << rel;
        let tile_index = first / u64::from(TILE_WIDTH);
        let pos = (first % u64::from(TILE_WIDTH)) as usize;
        let width = (pos + count) as u16;
        Some((
            TilePath {
                kind: TileKind::Hashes { level: tile_level },
                index: tile_index,
                width,
            },
            pos,
            count,
        ))
    }

    /// The tile at `(kind, index)` as it exists in a tree of `size` leaves:
    /// full if complete, else partial with the width the spec gives
    /// (`floor(size / 256^L) mod 256`), or `None` if it has no entry yet.
    pub fn at_size(kind: TileKind, index: u64, size: u64) -> Option<TilePath> {
        let count = match kind {
            TileKind::Entries => size,
            TileKind::Hashes { level } => {
                let shift = u32::from(level) * u32::from(TILE_HEIGHT);
                if shift >= 64 {
                    0
                } else {
                    size >> shift
                }
            }
        };
        let start = index.checked_mul(u64::from(TILE_WIDTH))?;
        if count <= start {
            return None;
        }
        let width = (count - start).min(u64::from(TILE_WIDTH)) as u16;
        Some(TilePath { kind, index, width })
    }
}

impl std::fmt::Display for TilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path())
    }
}

/// Decimal with no leading zero and value at most `max`.
fn parse_small(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok().filter(|&v| v <= max)
}

/// `<N>` path elements: 1234067 → `x001/x234/067`.
pub fn encode_index(n: u64) -> String {
    let digits = n.to_string();
    let pad = (3 - digits.len() % 3) % 3;
    let padded = format!("{}{digits}", "0".repeat(pad));
    let groups: Vec<&str> = padded
        .as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).expect("ASCII"))
        .collect();
    let mut s = String::new();
    for (i, g) in groups.iter().enumerate() {
        if i + 1 < groups.len() {
            s.push('x');
        }
        s.push_str(g);
        if i + 1 < groups.len() {
            s.push('/');
        }
    }
    s
}

/// Parse `<N>` elements (canonical only: no leading `x000` group).
fn parse_index(elems: &[&str]) -> Result<u64, TileError> {
    let bad =
        TileError::BadPath("the index must be 3-digit groups, all but the last prefixed by x");
    if elems.is_empty() || elems.len() > 7 {
        return Err(bad);
    }
    let mut n: u64 = 0;
    for (i, e) in elems.iter().enumerate() {
        let last = i + 1 == elems.len();
        let digits = if last {
            *e
        } else {
            e.strip_prefix('x').ok_or(bad.clone())?
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        if i == 0 && !last && digits == "000" {
            return Err(TileError::BadPath("non-canonical index (leading x000)"));
        }
        let v: u64 = digits.parse().map_err(|_| bad.clone())?;
        n = n
            .checked_mul(1000)
            .and_then(|n| n.checked_add(v))
            .ok_or(TileError::BadPath("index too large"))?;
    }
    Ok(n)
}

/// A hash tile's contents: its hashes concatenated (1–256 hashes).
pub fn encode_tile(hashes: &[Hash]) -> Result<Vec<u8>, TileError> {
    if hashes.is_empty() || hashes.len() > usize::from(TILE_WIDTH) {
        return Err(TileError::BadCoordinates("width must be 1 to 256"));
    }
    Ok(hashes.concat())
}

/// Parse a hash tile of `width` hashes from untrusted bytes.
pub fn parse_tile(bytes: &[u8], width: u16) -> Result<Vec<Hash>, TileError> {
    if width == 0 || width > TILE_WIDTH {
        return Err(TileError::BadCoordinates("width must be 1 to 256"));
    }
    let expected = usize::from(width) * HASH_LEN;
    if bytes.len() != expected {
        return Err(TileError::BadTileLength {
            width,
            expected,
            got: bytes.len(),
        });
    }
    Ok(bytes
        .chunks_exact(HASH_LEN)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect())
}

/// The node `(level, index)` from the hashes of the tile
/// [`TilePath::for_node`] names: the fold of `tile[pos .. pos+count]`
/// (a complete subtree of `count` tile hashes, `count` a power of two).
pub fn hash_from_tile(tile: &[Hash], pos: usize, count: usize) -> Option<Hash> {
    let mut layer: Vec<Hash> = tile.get(pos..pos.checked_add(count)?)?.to_vec();
    if !count.is_power_of_two() {
        return None;
    }
    while layer.len() > 1 {
        layer = layer
            .chunks_exact(2)
            .map(|p| merkle::node_hash(&p[0], &p[1]))
            .collect();
    }
    layer.pop()
}

/// An entry bundle: each entry as a big-endian `u16` length and its bytes
/// (1–256 entries, each at most 65,535 bytes; empty entries are allowed).
pub fn encode_entry_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, TileError> {
    if entries.is_empty() || entries.len() > usize::from(TILE_WIDTH) {
        return Err(TileError::BadBundle("a bundle holds 1 to 256 entries"));
    }
    let mut out = Vec::with_capacity(entries.iter().map(|e| 2 + e.as_ref().len()).sum());
    for e in entries {
        let e = e.as_ref();
        let len =
            u16::try_from(e.len()).map_err(|_| TileError::BadBundle("entry over 65535 bytes"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Parse an untrusted entry bundle (1–256 entries, no trailing bytes).
pub fn parse_entry_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, TileError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(TileError::BadBundle("too large"));
    }
    let mut entries = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if entries.len() == usize::from(TILE_WIDTH) {
            return Err(TileError::BadBundle("more than 256 entries"));
        }
        if rest.len() < 2 {
            return Err(TileError::BadBundle("truncated length"));
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let body = rest
            .get(2..2 + len)
            .ok_or(TileError::BadBundle("truncated entry"))?;
        entries.push(body);
        rest = &rest[2 + len..];
    }
    if entries.is_empty() {
        return Err(TileError::BadBundle("empty bundle"));
    }
    Ok(entries)
}

/// [`parse_entry_bundle`], requiring exactly `width` entries.
pub fn parse_entry_bundle_exact(bytes: &[u8], width: u16) -> Result<Vec<&[u8]>, TileError> {
    let entries = parse_entry_bundle(bytes)?;
    if entries.len() != usize::from(width) {
        return Err(TileError::BundleCount {
            expected: usize::from(width),
            got: entries.len(),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::merkle::{leaf_hash, HashReader, MemoryTree};
    use proptest::prelude::*;

    #[test]
    fn index_encoding() {
        assert_eq!(encode_index(0), "000");
        assert_eq!(encode_index(67), "067");
        assert_eq!(encode_index(999), "999");
        assert_eq!(encode_index(1000), "x001/000");
        assert_eq!(encode_index(1234067), "x001/x234/067");
        assert_eq!(encode_index(u64::MAX), "x018/x446/x744/x073/x709/x551/615");
    }

    #[test]
    fn paths() {
        let t = TilePath::hashes(0, 1234067, 256).unwrap();
        assert_eq!(t.path(), "tile/0/x001/x234/067");
        assert_eq!(TilePath::parse("tile/0/x001/x234/067").unwrap(), t);
        let p = TilePath::entries(5, 17).unwrap();
        assert_eq!(p.path(), "tile/entries/005.p/17");
        assert_eq!(TilePath::parse("tile/entries/005.p/17").unwrap(), p);
        let top = TilePath::hashes(63, u64::MAX, 1).unwrap();
        assert_eq!(TilePath::parse(&top.path()).unwrap(), top);
        for bad in [
            "",
            "tile",
            "tile/0",
            "/tile/0/000",
            "tile/0/000/",
            "tile/00/000",
            "tile/01/000",
            "tile/64/000",
            "tile/-1/000",
            "tile/0/0",
            "tile/0/0000",
            "tile/0/67",
            "tile/0/x067",
            "tile/0/001/234",
            "tile/0/x000/067",
            "tile/0/x001/x234",
            "tile/0/X001/234",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/07",
            "tile/0/000.p/",
            "tile/0/000.p",
            "tile/0/000.p/1/2",
            "tile/0/000.P/1",
            "tile/entry/000",
            "tile/entries/000.p/1.p/2",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/x001/x001/x001/x001/x001/x001/x001/001",
            "tile/0/+12",
            "tile/0/ 12",
            "tile/0/١٢٣",
        ] {
            assert!(TilePath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TilePath::hashes(64, 0, 1).is_err());
        assert!(TilePath::hashes(0, 0, 0).is_err());
        assert!(TilePath::entries(0, 257).is_err());
    }

    #[test]
    fn spec_example_tree_of_70000() {
        // The tlog-tiles example: 273 full level-0 tiles and a partial one
        // of width 112, one full level-1 tile and a partial of width 17, a
        // partial level-2 tile of width 1.
        let size = 70_000;
        let l0 = TileKind::Hashes { level: 0 };
        let l1 = TileKind::Hashes { level: 1 };
        let l2 = TileKind::Hashes { level: 2 };
        assert_eq!(TilePath::at_size(l0, 272, size).unwrap().width, 256);
        assert_eq!(TilePath::at_size(l0, 273, size).unwrap().width, 112);
        assert!(TilePath::at_size(l0, 274, size).is_none());
        assert_eq!(TilePath::at_size(l1, 0, size).unwrap().width, 256);
        assert_eq!(TilePath::at_size(l1, 1, size).unwrap().width, 17);
        assert!(TilePath::at_size(l1, 2, size).is_none());
        assert_eq!(TilePath::at_size(l2, 0, size).unwrap().width, 1);
        assert!(TilePath::at_size(TileKind::Hashes { level: 3 }, 0, size).is_none());
        // "A tree of size 256 is a full level-0 tile and a partial level-1
        // tile of width 1."
        assert_eq!(TilePath::at_size(l0, 0, 256).unwrap().width, 256);
        assert_eq!(TilePath::at_size(l1, 0, 256).unwrap().width, 1);
        assert!(TilePath::at_size(TileKind::Entries, 0, 0).is_none());
        assert!(TilePath::at_size(TileKind::Hashes { level: 9 }, 0, u64::MAX).is_none());
    }

    #[test]
    fn availability() {
        assert!(TilePath::hashes(0, 0, 5).unwrap().is_available(5));
        assert!(!TilePath::hashes(0, 0, 6).unwrap().is_available(5));
        assert!(!TilePath::hashes(0, 0, 256).unwrap().is_available(255));
        assert!(TilePath::hashes(1, 0, 1).unwrap().is_available(256));
        assert!(!TilePath::hashes(1, 0, 2).unwrap().is_available(511));
        assert!(TilePath::entries(1, 3).unwrap().is_available(259));
        assert!(!TilePath::entries(1, 4).unwrap().is_available(259));
        assert!(!TilePath::hashes(8, 0, 1).unwrap().is_available(u64::MAX));
        assert!(TilePath::hashes(7, 0, 255).unwrap().is_available(u64::MAX));
        assert!(!TilePath::hashes(0, u64::MAX, 256)
            .unwrap()
            .is_available(u64::MAX));
    }

    #[test]
    fn tiles_reproduce_every_node() {
        let t = MemoryTree::from_entries((0..70_000u32).map(|i| i.to_be_bytes()));
        let size = t.size();
        // Serve tiles the way the relay would: from the stored nodes.
        let tile = |p: TilePath| -> Vec<Hash> {
            assert!(p.is_available(size), "{p}");
            t.read_many(&p.node_ids()).unwrap()
        };
        for (level, index) in [
            (0u8, 0u64),
            (0, 69_999),
            (3, 17),
            (7, 545),
            (8, 0),
            (8, 272),
            (12, 16),
            (16, 1),
            (9, 135),
        ] {
            let id = NodeId::new(level, index);
            if !id.is_complete_at(size) {
                continue;
            }
            let (p, pos, count) = TilePath::for_node(id).unwrap();
            let hashes = tile(p);
            assert_eq!(
                hash_from_tile(&hashes, pos, count).unwrap(),
                t.read(level, index).unwrap(),
                "node {level}/{index}"
            );
        }
        // A tile's bytes round-trip.
        let p = TilePath::at_size(TileKind::Hashes { level: 0 }, 273, size).unwrap();
        let bytes = encode_tile(&tile(p)).unwrap();
        assert_eq!(bytes.len(), 112 * 32);
        assert_eq!(parse_tile(&bytes, p.width).unwrap(), tile(p));
        assert!(parse_tile(&bytes, 111).is_err());
        // Level-1 hashes are roots of full level-0 tiles.
        let l1 = tile(TilePath::hashes(1, 0, 3).unwrap());
        let l0 = tile(TilePath::hashes(0, 2, 256).unwrap());
        assert_eq!(hash_from_tile(&l0, 0, 256).unwrap(), l1[2]);
    }

    #[test]
    fn bundles() {
        let entries: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![], vec![7; 300]];
        let b = encode_entry_bundle(&entries).unwrap();
        assert_eq!(&b[..5], &[0, 1, b'a', 0, 0]);
        assert_eq!(parse_entry_bundle(&b).unwrap(), entries);
        assert!(parse_entry_bundle_exact(&b, 3).is_ok());
        assert!(parse_entry_bundle_exact(&b, 4).is_err());
        assert!(parse_entry_bundle(&b[..b.len() - 1]).is_err());
        assert!(parse_entry_bundle(&[0]).is_err());
        assert!(parse_entry_bundle(&[]).is_err());
        assert!(encode_entry_bundle::<Vec<u8>>(&[]).is_err());
        assert!(encode_entry_bundle(&[vec![0u8; 65_536]]).is_err());
        assert!(encode_entry_bundle(&[vec![0u8; 65_535]]).is_ok());
        let many = vec![vec![1u8]; 257];
        assert!(encode_entry_bundle(&many).is_err());
        let mut raw = encode_entry_bundle(&many[..256]).unwrap();
        assert_eq!(parse_entry_bundle(&raw).unwrap().len(), 256);
        raw.extend_from_slice(&[0, 1, 1]);
        assert!(parse_entry_bundle(&raw).is_err());
        // Entries hash to the level-0 tile.
        let t = MemoryTree::from_entries(&entries);
        let hashes: Vec<Hash> = parse_entry_bundle(&b)
            .unwrap()
            .iter()
            .map(|e| leaf_hash(e))
            .collect();
        assert_eq!(hashes, t.level(0));
    }

    fn tile_path_strategy() -> impl Strategy<Value = TilePath> {
        (
            prop_oneof![
                (0u8..=63).prop_map(|level| TileKind::Hashes { level }),
                Just(TileKind::Entries)
            ],
            prop_oneof![any::<u64>(), 0u64..5000],
            1u16..=256,
        )
            .prop_map(|(kind, index, width)| TilePath { kind, index, width })
    }

    proptest! {
        #[test]
        fn tile_paths_roundtrip(p in tile_path_strategy()) {
            prop_assert_eq!(TilePath::parse(&p.path()).unwrap(), p);
        }

        #[test]
        fn tile_path_parse_never_panics(s in "[tilex0-9./pentris]{0,40}") {
            if let Ok(p) = TilePath::parse(&s) {
                prop_assert_eq!(p.path(), s);
            }
        }

        #[test]
        fn tiles_roundtrip(hashes in proptest::collection::vec(any::<[u8; 32]>(), 1..=256)) {
            let b = encode_tile(&hashes).unwrap();
            prop_assert_eq!(parse_tile(&b, hashes.len() as u16).unwrap(), hashes);
        }

        #[test]
        fn bundles_roundtrip(entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..=256)) {
            let b = encode_entry_bundle(&entries).unwrap();
            let back = parse_entry_bundle_exact(&b, entries.len() as u16).unwrap();
            prop_assert_eq!(back, entries);
        }

        #[test]
        fn bundle_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(e) = parse_entry_bundle(&bytes) {
                prop_assert_eq!(encode_entry_bundle(&e).unwrap(), bytes.clone());
            }
            let _ = parse_tile(&bytes, (bytes.len() / 32).clamp(1, 256) as u16);
        }

        #[test]
        fn for_node_is_consistent(level in 0u8..64, index: u64) {
            if let Some((p, pos, count)) = TilePath::for_node(NodeId::new(level, index)) {
                let (tree_level, first, _) = p.node_range().unwrap();
                prop_assert_eq!(tree_level, level / 8 * 8);
                prop_assert_eq!(count, 1usize << (level % 8));
                prop_assert_eq!(pos + count, p.width as usize);
                prop_assert_eq!(first + pos as u64, index << (level % 8));
            }
        }
    }
}
