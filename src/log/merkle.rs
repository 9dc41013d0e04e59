//! RFC 9162 Merkle tree hashing, tree state, proofs and their verification.
//!
//! * Leaf hash: `SHA-256(0x00 || entry)`; node hash:
//!   `SHA-256(0x01 || left || right)`; the empty tree's root is
//!   `SHA-256("")` (RFC 9162 §2.1.1).
//! * Storage model: the hash of every *complete* subtree is addressed as
//!   `(level, index)`: level 0 holds leaf hashes, and node `(l, i)` is the
//!   root of leaves `[i·2^l, (i+1)·2^l)`. A node, once complete, never
//!   changes, so a store only ever inserts. This is exactly the addressing
//!   of C2SP tlog-tiles: hash tile `L` holds the nodes of level `8·L`.
//! * [`CompactTree`] keeps only the right border (one complete subtree per
//!   set bit of the size) and tells, for each append, which new nodes to
//!   persist.
//! * Roots at any past size, inclusion proofs (RFC 9162 §2.1.3.1) and
//!   consistency proofs (§2.1.4.1) are computed from stored nodes only.
//!   Each comes in two forms: a [`HashPlan`] listing the nodes to fetch
//!   (for async or batched storage) and a pure [`HashPlan::assemble`]
//!   step; or the convenience functions taking a synchronous
//!   [`HashReader`].
//! * [`verify_inclusion`] and [`verify_consistency`] follow RFC 9162
//!   §2.1.3.2 and §2.1.4.2 step by step.

use ring::digest;

/// A SHA-256 hash: leaf, node or root.
pub type Hash = [u8; 32];

/// Length of a [`Hash`].
pub const HASH_LEN: usize = 32;

/// `SHA-256("")`, the root of the empty tree (RFC 9162 §2.1.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Most hashes accepted in one encoded proof. An inclusion proof has at
/// most 64 hashes and a consistency proof at most 2·64 for any `u64` size.
pub const MAX_PROOF_HASHES: usize = 128;

/// Why a proof request, a proof or its encoding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The second tree is smaller than the first.
    #[error("tree size {size2} is smaller than {size1}")]
    SizeDecreased {
        /// The older size.
        size1: u64,
        /// The newer size.
        size2: u64,
    },
    /// The proof has fewer hashes than the sizes require.
    #[error("the proof is too short")]
    ProofTooShort,
    /// The proof has more hashes than the sizes require.
    #[error("the proof is too long")]
    ProofTooLong,
    /// The proof is well formed but does not lead to the expected root.
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    /// Two trees of the same size have different roots.
    #[error("two trees of size {size} have different roots")]
    ForkedRoots {
        /// The common size.
        size: u64,
    },
    /// An encoded proof is not a whole number of 32-byte hashes, or is
    /// longer than [`MAX_PROOF_HASHES`].
    #[error("malformed proof encoding: {0}")]
    Encoding(&'static str),
    /// [`HashPlan::assemble`] got a different number of hashes than nodes.
    #[error("expected {expected} node hashes, got {got}")]
    PlanMismatch {
        /// Nodes in the plan.
        expected: usize,
        /// Hashes supplied.
        got: usize,
    },
    /// The tree already holds `u64::MAX` leaves.
    #[error("the tree is full")]
    TreeFull,
}

/// `SHA-256(0x00 || entry)`: the hash of a log entry (RFC 9162 §2.1.1).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[0x00]);
    ctx.update(entry);
    to_hash(ctx.finish())
}

/// `SHA-256(0x01 || left || right)`: an interior node (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    node_hash_bytes(left, right)
}

/// [`node_hash`] over children of any length (for test vectors that hash
/// short strings; real trees always use 32-byte children).
pub fn node_hash_bytes(left: &[u8], right: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx.finish())
}

fn to_hash(d: digest::Digest) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The address of a complete subtree: the root of leaves
/// `[index·2^level, (index+1)·2^level)`. Level 0 is the leaf hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves (0..=63).
    pub level: u8,
    /// Position within the level, from 0 at the left.
    pub index: u64,
}

impl NodeId {
    /// A node address.
    pub const fn new(level: u8, index: u64) -> Self {
        NodeId { level, index }
    }

    /// Whether this subtree is complete (all its leaves exist) in a tree of
    /// `size` leaves; only complete nodes are ever stored or served.
    pub fn is_complete_at(&self, size: u64) -> bool {
        self.level < 64 && ((u128::from(self.index) + 1) << self.level) <= u128::from(size)
    }

    /// The leaves this node covers, `[start, end)`, or `None` if that range
    /// does not fit in `u64`.
    pub fn leaf_range(&self) -> Option<(u64, u64)> {
        if self.level >= 64 {
            return None;
        }
        let start = u128::from(self.index) << self.level;
        let end = (u128::from(self.index) + 1) << self.level;
        Some((u64::try_from(start).ok()?, u64::try_from(end).ok()?))
    }
}

/// Fold hashes of consecutive complete subtrees, largest first, into the
/// root of their union: `h0 ⊕ (h1 ⊕ (… ⊕ hn))`. An empty list gives
/// [`EMPTY_ROOT`].
fn fold_right(hashes: &[Hash]) -> Hash {
    match hashes.split_last() {
        None => EMPTY_ROOT,
        Some((last, rest)) => rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)),
    }
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Push the complete subtrees whose union is the RFC subtree
/// `D[start:end]` (where `start` is a multiple of the smallest power of two
/// not below `end - start`, as every subtree of the RFC recursion is),
/// largest first.
fn push_subtree_nodes(start: u64, end: u64, out: &mut Vec<NodeId>) {
    let n = end - start;
    let mut pos = start;
    for level in (0..64u8).rev() {
        if n >> level & 1 == 1 {
            out.push(NodeId::new(level, pos >> level));
            pos += 1u64 << level;
        }
    }
}

/// Which stored nodes to fetch to compute a root or a proof, and how to
/// combine them. Produced by [`root_plan`], [`inclusion_plan`] and
/// [`consistency_plan`]; the storage fetches [`HashPlan::nodes`] (in any
/// way it likes, e.g. one batched query) and [`HashPlan::assemble`] does
/// the hashing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HashPlan {
    nodes: Vec<NodeId>,
    /// Each output hash is the fold of `nodes[a..b]`.
    groups: Vec<(usize, usize)>,
}

impl HashPlan {
    /// The nodes to fetch, in the order [`HashPlan::assemble`] expects
    /// their hashes. Every node is complete at the plan's tree size.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// How many hashes [`HashPlan::assemble`] returns.
    pub fn output_len(&self) -> usize {
        self.groups.len()
    }

    fn push_subtree(&mut self, start: u64, end: u64) {
        let a = self.nodes.len();
        push_subtree_nodes(start, end, &mut self.nodes);
        self.groups.push((a, self.nodes.len()));
    }

    /// Combine the fetched hashes (one per [`HashPlan::nodes`] entry, same
    /// order) into the proof (or the one-element root).
    pub fn assemble(&self, hashes: &[Hash]) -> Result<Vec<Hash>, ProofError> {
        if hashes.len() != self.nodes.len() {
            return Err(ProofError::PlanMismatch {
                expected: self.nodes.len(),
                got: hashes.len(),
            });
        }
        Ok(self
            .groups
            .iter()
            .map(|&(a, b)| fold_right(&hashes[a..b]))
            .collect())
    }
}

/// The nodes whose fold is the root of the tree of `size` leaves: one
/// complete subtree per set bit of `size`, largest (leftmost) first. The
/// plan has one output; for size 0 it fetches nothing and gives
/// [`EMPTY_ROOT`].
pub fn root_plan(size: u64) -> HashPlan {
    let mut plan = HashPlan::default();
    plan.push_subtree(0, size);
    plan
}

/// The nodes for the inclusion proof of leaf `index` in the tree of `size`
/// leaves: `PATH(index, D[0:size])` of RFC 9162 §2.1.3.1, from the leaf's
/// sibling up to the root's child.
pub fn inclusion_plan(index: u64, size: u64) -> Result<HashPlan, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut plan = HashPlan::default();
    path(index, 0, size, &mut plan);
    Ok(plan)
}

/// `PATH(m, D[start:end])`.
fn path(m: u64, start: u64, end: u64, plan: &mut HashPlan) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path(m, start, start + k, plan);
        plan.push_subtree(start + k, end);
    } else {
        path(m - k, start + k, end, plan);
        plan.push_subtree(start, start + k);
    }
}

/// The nodes for the consistency proof from the tree of `size1` leaves to
/// the tree of `size2`: `PROOF(size1, D[0:size2])` of RFC 9162 §2.1.4.1.
/// Empty when `size1` is 0 or equals `size2`.
pub fn consistency_plan(size1: u64, size2: u64) -> Result<HashPlan, ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizeDecreased { size1, size2 });
    }
    let mut plan = HashPlan::default();
    if size1 > 0 && size1 < size2 {
        subproof(size1, 0, size2, true, &mut plan);
    }
    Ok(plan)
}

/// `SUBPROOF(m, D[start:end], b)`.
fn subproof(m: u64, start: u64, end: u64, b: bool, plan: &mut HashPlan) {
    let n = end - start;
    if m == n {
        if !b {
            plan.push_subtree(start, end);
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, start, start + k, b, plan);
        plan.push_subtree(start + k, end);
    } else {
        subproof(m - k, start + k, end, false, plan);
        plan.push_subtree(start, start + k);
    }
}

/// Read access to stored node hashes (see [`NodeId`] for the addressing).
/// The relay implements it over its database, an auditor over fetched
/// tiles, tests over a [`MemoryTree`].
pub trait HashReader {
    /// Why a node could not be read (missing, I/O, ...).
    type Error;

    /// The hash of the complete subtree `(level, index)`.
    fn read(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;

    /// Several nodes at once, in order; override to batch.
    fn read_many(&self, ids: &[NodeId]) -> Result<Vec<Hash>, Self::Error> {
        ids.iter().map(|id| self.read(id.level, id.index)).collect()
    }
}

impl<R: HashReader + ?Sized> HashReader for &R {
    type Error = R::Error;
    fn read(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        (**self).read(level, index)
    }
    fn read_many(&self, ids: &[NodeId]) -> Result<Vec<Hash>, Self::Error> {
        (**self).read_many(ids)
    }
}

/// A request that is invalid in itself, or a storage failure.
#[derive(Debug, thiserror::Error)]
pub enum TreeError<E> {
    /// The sizes or index make no proof.
    #[error(transparent)]
    Invalid(#[from] ProofError),
    /// The storage could not supply a node.
    #[error("reading a stored tree node: {0}")]
    Read(E),
}

fn run_plan<R: HashReader + ?Sized>(
    reader: &R,
    plan: &HashPlan,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    let hashes = reader.read_many(plan.nodes()).map_err(TreeError::Read)?;
    Ok(plan.assemble(&hashes)?)
}

/// The root of the tree of `size` leaves, from stored nodes.
pub fn tree_root<R: HashReader + ?Sized>(reader: &R, size: u64) -> Result<Hash, R::Error> {
    let plan = root_plan(size);
    let hashes = reader.read_many(plan.nodes())?;
    Ok(fold_right(&hashes))
}

/// The inclusion proof of leaf `index` in the tree of `size`, from stored
/// nodes.
pub fn inclusion_proof<R: HashReader + ?Sized>(
    reader: &R,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    run_plan(reader, &inclusion_plan(index, size)?)
}

/// The consistency proof from size `size1` to `size2`, from stored nodes.
pub fn consistency_proof<R: HashReader + ?Sized>(
    reader: &R,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    run_plan(reader, &consistency_plan(size1, size2)?)
}

/// The state needed to append: the tree size and the hashes of the
/// complete subtrees on its right border (one per set bit of the size,
/// largest first), i.e. the nodes of [`root_plan`]`(size)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactTree {
    size: u64,
    border: Vec<Hash>,
}

impl CompactTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild from the border hashes of `size` (the hashes of
    /// `root_plan(size).nodes()`, in that order), e.g. after a restart.
    pub fn from_border(size: u64, border: Vec<Hash>) -> Result<Self, ProofError> {
        let expected = size.count_ones() as usize;
        if border.len() != expected {
            return Err(ProofError::PlanMismatch {
                expected,
                got: border.len(),
            });
        }
        Ok(CompactTree { size, border })
    }

    /// Rebuild from stored nodes.
    pub fn load<R: HashReader + ?Sized>(reader: &R, size: u64) -> Result<Self, R::Error> {
        let border = reader.read_many(root_plan(size).nodes())?;
        Ok(CompactTree { size, border })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The border hashes, largest subtree first.
    pub fn border(&self) -> &[Hash] {
        &self.border
    }

    /// The current root hash.
    pub fn root(&self) -> Hash {
        fold_right(&self.border)
    }

    /// Append a leaf hash. Returns every node that became complete — the
    /// leaf itself at level 0, then one node per level it completes — which
    /// is exactly what a store must persist for this append. O(log n).
    pub fn append(&mut self, leaf: Hash) -> Result<Vec<(NodeId, Hash)>, ProofError> {
        if self.size == u64::MAX {
            return Err(ProofError::TreeFull);
        }
        let mut index = self.size;
        let mut level = 0u8;
        let mut hash = leaf;
        let mut new_nodes = vec![(NodeId::new(0, index), hash)];
        while index & 1 == 1 {
            let left = self
                .border
                .pop()
                .expect("a set low bit of the size has a border node");
            hash = node_hash(&left, &hash);
            index >>= 1;
            level += 1;
            new_nodes.push((NodeId::new(level, index), hash));
        }
        self.border.push(hash);
        self.size += 1;
        Ok(new_nodes)
    }

    /// Append a log entry (hashing it with [`leaf_hash`]).
    pub fn append_entry(&mut self, entry: &[u8]) -> Result<Vec<(NodeId, Hash)>, ProofError> {
        self.append(leaf_hash(entry))
    }
}

/// A node that a [`HashReader`] does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no stored node at level {level}, index {index}")]
pub struct MissingNode {
    /// Its level.
    pub level: u8,
    /// Its index.
    pub index: u64,
}

/// A whole tree in memory, every complete node kept: for tests, tools and
/// an auditor recomputing a log from its entries.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    compact: CompactTree,
}

impl MemoryTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of these entries.
    pub fn from_entries<I: IntoIterator<Item = E>, E: AsRef<[u8]>>(entries: I) -> Self {
        let mut t = Self::new();
        for e in entries {
            t.push_entry(e.as_ref());
        }
        t
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.compact.size()
    }

    /// Append a leaf hash; returns the new leaf's index.
    pub fn push_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.size();
        let nodes = self
            .compact
            .append(leaf)
            .expect("an in-memory tree is never full");
        for (id, h) in nodes {
            let level = usize::from(id.level);
            if self.levels.len() <= level {
                self.levels.resize_with(level + 1, Vec::new);
            }
            debug_assert_eq!(self.levels[level].len() as u64, id.index);
            self.levels[level].push(h);
        }
        index
    }

    /// Append an entry; returns its index.
    pub fn push_entry(&mut self, entry: &[u8]) -> u64 {
        self.push_leaf_hash(leaf_hash(entry))
    }

    /// The complete nodes of one level, left to right.
    pub fn level(&self, level: u8) -> &[Hash] {
        self.levels
            .get(usize::from(level))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The current root.
    pub fn root(&self) -> Hash {
        self.compact.root()
    }

    /// The root at a past (or the current) size.
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError<MissingNode>> {
        if size > self.size() {
            return Err(TreeError::Invalid(ProofError::SizeDecreased {
                size1: size,
                size2: self.size(),
            }));
        }
        tree_root(self, size).map_err(TreeError::Read)
    }

    /// The inclusion proof of `index` at `size`.
    pub fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, TreeError<MissingNode>> {
        inclusion_proof(self, index, size)
    }

    /// The consistency proof from `size1` to `size2`.
    pub fn consistency_proof(
        &self,
        size1: u64,
        size2: u64,
    ) -> Result<Vec<Hash>, TreeError<MissingNode>> {
        consistency_proof(self, size1, size2)
    }

    /// The compact state (size and border).
    pub fn compact(&self) -> &CompactTree {
        &self.compact
    }
}

impl HashReader for MemoryTree {
    type Error = MissingNode;
    fn read(&self, level: u8, index: u64) -> Result<Hash, MissingNode> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.levels.get(usize::from(level))?.get(i))
            .copied()
            .ok_or(MissingNode { level, index })
    }
}

/// The root that an inclusion proof leads to: RFC 9162 §2.1.3.2, steps 1–5
/// without the final comparison (step 5 still checks that `sn` reached 0,
/// i.e. the proof has exactly the right length).
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    // 1. leaf_index must be below tree_size.
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // 2. fn = leaf_index, sn = tree_size - 1.
    let (mut fnn, mut sn) = (index, size - 1);
    // 3. r = hash.
    let mut r = *leaf;
    // 4. For each p in inclusion_path:
    for p in proof {
        // a. sn == 0: the path is longer than the tree is deep.
        if sn == 0 {
            return Err(ProofError::ProofTooLong);
        }
        // b. If LSB(fn) is set, or fn == sn: r = HASH(0x01 || p || r), then
        //    (when LSB(fn) is not set) shift until LSB(fn) is set or fn is 0.
        if fnn & 1 == 1 || fnn == sn {
            r = node_hash(p, &r);
            while fnn & 1 == 0 && fnn != 0 {
                fnn >>= 1;
                sn >>= 1;
            }
        } else {
            // Otherwise r = HASH(0x01 || r || p).
            r = node_hash(&r, p);
        }
        // c. Shift both once.
        fnn >>= 1;
        sn >>= 1;
    }
    // 5. sn must be 0.
    if sn != 0 {
        return Err(ProofError::ProofTooShort);
    }
    Ok(r)
}

/// Verify that `leaf` is at `index` in the tree of `size` with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion_proof(index, size, leaf, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verify that the tree of `size1` leaves with `root1` is a prefix of the
/// tree of `size2` leaves with `root2` (RFC 9162 §2.1.4.2).
///
/// Edge cases the RFC leaves to the caller (it defines proofs for
/// `0 < size1 < size2` only), handled as transparency-dev/merkle does:
/// `size1 > size2` fails; `size1 == size2` needs an empty proof and equal
/// roots; `size1 == 0` needs an empty proof (the empty tree is a prefix
/// of every tree).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizeDecreased { size1, size2 });
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::ProofTooLong);
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::ForkedRoots { size: size1 })
        };
    }
    if size1 == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::ProofTooLong)
        };
    }
    // 1. An empty consistency_path fails.
    if proof.is_empty() {
        return Err(ProofError::ProofTooShort);
    }
    // 2. If first is an exact power of 2, prepend first_hash.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(*root1);
    }
    path.extend_from_slice(proof);
    // 3. fn = first - 1, sn = second - 1.
    let (mut fnn, mut sn) = (size1 - 1, size2 - 1);
    // 4. While LSB(fn) is set, shift both.
    while fnn & 1 == 1 {
        fnn >>= 1;
        sn >>= 1;
    }
    // 5. fr = sr = the first value.
    let (mut fr, mut sr) = (path[0], path[0]);
    // 6. For each subsequent value c:
    for c in &path[1..] {
        // a. sn == 0 means the path is too long.
        if sn == 0 {
            return Err(ProofError::ProofTooLong);
        }
        // b. If LSB(fn) is set, or fn == sn:
        if fnn & 1 == 1 || fnn == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnn & 1 == 0 && fnn != 0 {
                fnn >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        // c. Shift both once.
        fnn >>= 1;
        sn >>= 1;
    }
    // 7. fr == first_hash, sr == second_hash, sn == 0.
    if sn != 0 {
        return Err(ProofError::ProofTooShort);
    }
    if fr != *root1 || sr != *root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Encode a proof as its hashes concatenated (32 bytes each, in order).
pub fn encode_proof(proof: &[Hash]) -> Vec<u8> {
    proof.concat()
}

/// Parse [`encode_proof`]'s form from untrusted bytes: a multiple of 32
/// bytes, at most [`MAX_PROOF_HASHES`] hashes.
pub fn parse_proof(bytes: &[u8]) -> Result<Vec<Hash>, ProofError> {
    if !bytes.len().is_multiple_of(HASH_LEN) {
        return Err(ProofError::Encoding("length is not a multiple of 32"));
    }
    if bytes.len() / HASH_LEN > MAX_PROOF_HASHES {
        return Err(ProofError::Encoding("too many hashes"));
    }
    Ok(bytes
        .chunks_exact(HASH_LEN)
        .map(|c| c.try_into().expect("32-byte chunk"))
        .collect())
}

/// Most bytes accepted by [`InclusionProof::from_json`] and
/// [`ConsistencyProof::from_json`].
pub const MAX_PROOF_JSON_BYTES: usize = 16 * 1024;

/// An inclusion proof with its coordinates, as served by the relay's
/// convenience endpoint and kept in receipt bundles (JSON, hashes in
/// standard base64).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// The leaf's index.
    pub leaf_index: u64,
    /// The size of the tree the proof is for.
    pub tree_size: u64,
    /// `PATH(leaf_index, D[0:tree_size])`, leaf level first.
    #[serde(with = "super::b64::hashes")]
    pub hashes: Vec<Hash>,
}

impl InclusionProof {
    /// Verify against a leaf hash and the root of `tree_size`.
    pub fn verify(&self, leaf: &Hash, root: &Hash) -> Result<(), ProofError> {
        verify_inclusion(self.leaf_index, self.tree_size, leaf, &self.hashes, root)
    }

    /// Parse untrusted JSON (size- and count-limited).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProofError> {
        if bytes.len() > MAX_PROOF_JSON_BYTES {
            return Err(ProofError::Encoding("proof JSON too large"));
        }
        let p: Self = serde_json::from_slice(bytes)
            .map_err(|_| ProofError::Encoding("invalid proof JSON"))?;
        if p.hashes.len() > MAX_PROOF_HASHES {
            return Err(ProofError::Encoding("too many hashes"));
        }
        Ok(p)
    }
}

/// A consistency proof with its sizes (JSON, hashes in standard base64).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// The older size.
    pub size1: u64,
    /// The newer size.
    pub size2: u64,
    /// `PROOF(size1, D[0:size2])`.
    #[serde(with = "super::b64::hashes")]
    pub hashes: Vec<Hash>,
}

impl ConsistencyProof {
    /// Verify against the two roots.
    pub fn verify(&self, root1: &Hash, root2: &Hash) -> Result<(), ProofError> {
        verify_consistency(self.size1, self.size2, &self.hashes, root1, root2)
    }

    /// Parse untrusted JSON (size- and count-limited).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProofError> {
        if bytes.len() > MAX_PROOF_JSON_BYTES {
            return Err(ProofError::Encoding("proof JSON too large"));
        }
        let p: Self = serde_json::from_slice(bytes)
            .map_err(|_| ProofError::Encoding("invalid proof JSON"))?;
        if p.hashes.len() > MAX_PROOF_HASHES {
            return Err(ProofError::Encoding("too many hashes"));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 9162 §2.1.1 MTH over leaf hashes, straight from the definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// RFC 9162 §2.1.3.1 PATH, straight from the definition.
    fn rfc_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return vec![];
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = rfc_path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = rfc_path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    /// RFC 9162 §2.1.4.1 SUBPROOF, straight from the definition.
    fn rfc_subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b { vec![] } else { vec![mth(leaves)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = rfc_subproof(m, &leaves[..k], b);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = rfc_subproof(m - k, &leaves[k..], false);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    fn tree(n: usize) -> MemoryTree {
        let mut t = MemoryTree::new();
        for l in leaves(n) {
            t.push_leaf_hash(l);
        }
        t
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        let d = digest::digest(&digest::SHA256, b"");
        assert_eq!(d.as_ref(), EMPTY_ROOT);
        assert_eq!(CompactTree::new().root(), EMPTY_ROOT);
        assert_eq!(tree(0).root_at(0).unwrap(), EMPTY_ROOT);
    }

    #[test]
    fn split_points() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn roots_match_the_definition_for_every_size_up_to_300() {
        let l = leaves(300);
        let t = tree(300);
        for size in 0..=300usize {
            assert_eq!(
                t.root_at(size as u64).unwrap(),
                mth(&l[..size]),
                "size {size}"
            );
        }
        assert_eq!(t.root(), mth(&l));
    }

    #[test]
    fn proofs_match_the_definition_exhaustively_up_to_70() {
        let l = leaves(70);
        let t = tree(70);
        for size in 1..=70usize {
            let root = mth(&l[..size]);
            for i in 0..size {
                let p = t.inclusion_proof(i as u64, size as u64).unwrap();
                assert_eq!(p, rfc_path(i, &l[..size]), "inclusion {i} in {size}");
                verify_inclusion(i as u64, size as u64, &l[i], &p, &root).unwrap();
            }
            for m in 1..=size {
                let p = t.consistency_proof(m as u64, size as u64).unwrap();
                assert_eq!(
                    p,
                    rfc_subproof(m, &l[..size], true),
                    "consistency {m} {size}"
                );
                verify_consistency(m as u64, size as u64, &p, &mth(&l[..m]), &root).unwrap();
            }
        }
    }

    #[test]
    fn appends_report_exactly_the_new_complete_nodes() {
        let mut c = CompactTree::new();
        let mut all = std::collections::BTreeSet::new();
        for (i, l) in leaves(64).into_iter().enumerate() {
            let new = c.append(l).unwrap();
            assert_eq!(new[0], (NodeId::new(0, i as u64), l));
            assert_eq!(new.len(), 1 + (i as u64).trailing_ones() as usize);
            for (id, _) in &new {
                assert!(id.is_complete_at(i as u64 + 1));
                assert!(!id.is_complete_at(i as u64));
                assert!(all.insert(*id));
            }
        }
        // Every complete node of a 64-leaf tree, each reported once.
        assert_eq!(all.len(), 127);
    }

    #[test]
    fn compact_tree_reloads_from_storage() {
        let t = tree(1000);
        for size in [0u64, 1, 2, 3, 255, 256, 257, 511, 999, 1000] {
            let mut c = CompactTree::load(&t, size).unwrap();
            assert_eq!(c.root(), t.root_at(size).unwrap());
            assert_eq!(
                CompactTree::from_border(size, c.border().to_vec()).unwrap(),
                c
            );
            for l in leaves(1000).into_iter().skip(size as usize) {
                c.append(l).unwrap();
            }
            assert_eq!(c.root(), t.root());
        }
        assert!(CompactTree::from_border(3, vec![EMPTY_ROOT]).is_err());
    }

    #[test]
    fn plans_only_touch_complete_nodes() {
        for size in 1..200u64 {
            for n in root_plan(size).nodes() {
                assert!(n.is_complete_at(size));
            }
            for i in (0..size).step_by(7) {
                for n in inclusion_plan(i, size).unwrap().nodes() {
                    assert!(n.is_complete_at(size));
                }
            }
            for m in (0..=size).step_by(5) {
                for n in consistency_plan(m, size).unwrap().nodes() {
                    assert!(n.is_complete_at(size));
                }
            }
        }
    }

    #[test]
    fn huge_sizes_plan_without_overflow() {
        let size = u64::MAX;
        assert_eq!(root_plan(size).nodes().len(), 64);
        let p = inclusion_plan(size - 1, size).unwrap();
        assert_eq!(p.output_len(), 63);
        let p = consistency_plan(size - 1, size).unwrap();
        assert!(p.output_len() <= 2 * 64);
        assert_eq!(NodeId::new(63, 0).leaf_range(), Some((0, 1 << 63)));
        // [2^63, 2^64) ends past u64: that node can never be complete.
        assert!(NodeId::new(63, 1).leaf_range().is_none());
        assert!(!NodeId::new(63, 1).is_complete_at(u64::MAX));
        assert!(!NodeId::new(64, 0).is_complete_at(u64::MAX));
    }

    #[test]
    fn request_errors() {
        assert_eq!(
            inclusion_plan(5, 5),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert!(inclusion_plan(0, 0).is_err());
        assert!(consistency_plan(9, 8).is_err());
        assert_eq!(consistency_plan(0, 8).unwrap().output_len(), 0);
        assert_eq!(consistency_plan(8, 8).unwrap().output_len(), 0);
        let t = tree(8);
        assert!(matches!(
            t.inclusion_proof(3, 9),
            Err(TreeError::Read(MissingNode { .. }))
        ));
        assert!(root_plan(3).assemble(&[EMPTY_ROOT]).is_err());
        let mut full = CompactTree {
            size: u64::MAX,
            border: vec![],
        };
        assert_eq!(full.append(EMPTY_ROOT), Err(ProofError::TreeFull));
    }

    #[test]
    fn consistency_edge_cases() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        verify_consistency(0, 0, &[], &a, &a).unwrap();
        verify_consistency(0, 5, &[], &a, &b).unwrap();
        verify_consistency(3, 3, &[], &b, &b).unwrap();
        assert_eq!(
            verify_consistency(3, 3, &[], &a, &b),
            Err(ProofError::ForkedRoots { size: 3 })
        );
        assert!(verify_consistency(3, 3, &[a], &b, &b).is_err());
        assert!(verify_consistency(0, 3, &[a], &b, &b).is_err());
        assert!(verify_consistency(4, 3, &[], &b, &b).is_err());
        assert_eq!(
            verify_consistency(1, 2, &[], &a, &b),
            Err(ProofError::ProofTooShort)
        );
    }

    #[test]
    fn proof_encoding() {
        let p = vec![leaf_hash(b"x"), leaf_hash(b"y")];
        assert_eq!(parse_proof(&encode_proof(&p)).unwrap(), p);
        assert!(parse_proof(&[0u8; 31]).is_err());
        assert!(parse_proof(&vec![0u8; 32 * (MAX_PROOF_HASHES + 1)]).is_err());
        assert_eq!(parse_proof(&[]).unwrap(), Vec::<Hash>::new());
    }

    #[test]
    fn proof_json() {
        let t = tree(10);
        let ip = InclusionProof {
            leaf_index: 3,
            tree_size: 10,
            hashes: t.inclusion_proof(3, 10).unwrap(),
        };
        let json = serde_json::to_vec(&ip).unwrap();
        let back = InclusionProof::from_json(&json).unwrap();
        assert_eq!(back, ip);
        back.verify(&t.level(0)[3], &t.root()).unwrap();
        assert!(InclusionProof::from_json(b"{\"leaf_index\":1}").is_err());
        assert!(InclusionProof::from_json(
            b"{\"leaf_index\":1,\"tree_size\":2,\"hashes\":[\"AAAA\"]}"
        )
        .is_err());
        let cp = ConsistencyProof {
            size1: 4,
            size2: 10,
            hashes: t.consistency_proof(4, 10).unwrap(),
        };
        let back = ConsistencyProof::from_json(&serde_json::to_vec(&cp).unwrap()).unwrap();
        back.verify(&t.root_at(4).unwrap(), &t.root()).unwrap();
    }

    fn flip(h: &mut Hash, bit: usize) {
        h[bit / 8 % 32] ^= 1 << (bit % 8);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_inclusion_proof_verifies_and_tampering_fails(
            size in 1u64..600,
            i_seed: u64,
            which: usize,
            bit in 0usize..256,
        ) {
            let t = tree(size as usize);
            let index = i_seed % size;
            let leaf = t.level(0)[index as usize];
            let root = t.root();
            let proof = t.inclusion_proof(index, size).unwrap();
            prop_assert!(verify_inclusion(index, size, &leaf, &proof, &root).is_ok());

            // A flipped bit in the leaf, the root or any proof hash fails.
            let mut bad_leaf = leaf;
            flip(&mut bad_leaf, bit);
            prop_assert!(verify_inclusion(index, size, &bad_leaf, &proof, &root).is_err());
            let mut bad_root = root;
            flip(&mut bad_root, bit);
            prop_assert!(verify_inclusion(index, size, &leaf, &proof, &bad_root).is_err());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let k = which % bad.len();
                flip(&mut bad[k], bit);
                prop_assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
                // Dropping or adding an element fails.
                prop_assert!(verify_inclusion(index, size, &leaf, &proof[..proof.len() - 1], &root).is_err());
            }
            let mut longer = proof.clone();
            longer.push(root);
            prop_assert!(verify_inclusion(index, size, &leaf, &longer, &root).is_err());
            // Another index fails (unless it names the same leaf position
            // with an identical hash, impossible with distinct leaves).
            let other = (index + 1 + which as u64 % size) % size;
            if other != index {
                prop_assert!(verify_inclusion(other, size, &leaf, &proof, &root).is_err());
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_tampering_fails(
            size2 in 1u64..600,
            m_seed: u64,
            which: usize,
            bit in 0usize..256,
        ) {
            let t = tree(size2 as usize);
            let size1 = 1 + m_seed % size2;
            let root1 = t.root_at(size1).unwrap();
            let root2 = t.root();
            let proof = t.consistency_proof(size1, size2).unwrap();
            prop_assert!(verify_consistency(size1, size2, &proof, &root1, &root2).is_ok());
            let mut bad1 = root1;
            flip(&mut bad1, bit);
            prop_assert!(verify_consistency(size1, size2, &proof, &bad1, &root2).is_err());
            let mut bad2 = root2;
            flip(&mut bad2, bit);
            prop_assert!(verify_consistency(size1, size2, &proof, &root1, &bad2).is_err());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let k = which % bad.len();
                flip(&mut bad[k], bit);
                prop_assert!(verify_consistency(size1, size2, &bad, &root1, &root2).is_err());
                prop_assert!(verify_consistency(size1, size2, &proof[..proof.len() - 1], &root1, &root2).is_err());
                let mut longer = proof.clone();
                longer.push(root2);
                prop_assert!(verify_consistency(size1, size2, &longer, &root1, &root2).is_err());
            }
            if size1 < size2 {
                // Claiming a different old size fails.
                let other = 1 + (size1 + which as u64) % size2;
                if other != size1 && other < size2 {
                    let other_root = t.root_at(other).unwrap();
                    prop_assert!(verify_consistency(other, size2, &proof, &other_root, &root2).is_err());
                }
            }
        }

        #[test]
        fn proof_encoding_roundtrips(raw in proptest::collection::vec(any::<[u8; 32]>(), 0..MAX_PROOF_HASHES)) {
            prop_assert_eq!(parse_proof(&encode_proof(&raw)).unwrap(), raw);
        }

        #[test]
        fn parse_proof_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_proof(&bytes);
            let _ = InclusionProof::from_json(&bytes);
            let _ = ConsistencyProof::from_json(&bytes);
        }

        #[test]
        fn proof_json_roundtrips(index: u64, size: u64, raw in proptest::collection::vec(any::<[u8; 32]>(), 0..70)) {
            let p = InclusionProof { leaf_index: index, tree_size: size, hashes: raw.clone() };
            prop_assert_eq!(InclusionProof::from_json(&serde_json::to_vec(&p).unwrap()).unwrap(), p);
            let c = ConsistencyProof { size1: index, size2: size, hashes: raw };
            prop_assert_eq!(ConsistencyProof::from_json(&serde_json::to_vec(&c).unwrap()).unwrap(), c);
        }
    }
}
