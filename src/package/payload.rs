//! The age v1 payload (C2SP age.md, "Payload"): a 16-byte nonce, then the
//! plaintext in 64 KiB chunks, each sealed with ChaCha20-Poly1305 under
//! the payload key HKDF-SHA-256(ikm = file key, salt = nonce,
//! info = "payload") and the 12-byte nonce `counter (11 bytes, big endian)
//! || last flag (0x00, or 0x01 on the final chunk)`. The final chunk may be
//! full; it is empty only when the whole plaintext is empty.
//!
//! The AEAD is ring's; chunks are sealed and opened in batches of
//! [`BATCH`] (2 MiB) by a second thread, pipelined with the caller's own
//! work (hashing members beside the ciphertext when sealing, parsing the
//! tar, hashing and writing members when opening), so that both cores
//! work. Sealing writes the ciphertext on a third thread and reads long
//! members on a fourth ([`encrypt`], [`Encryptor::write_from`]). When
//! opening, the second thread also reads the ciphertext, and opens each
//! batch into contiguous plaintext that the caller can lend, without a
//! copy, to the thread writing a member ([`Decryptor::piece`]). At most
//! sixteen batch buffers exist per stream (32 MiB) when sealing; when
//! opening, three plus those lent out (bounded by the writer's queue).
//! A batch's plaintext is released to the reader only after every chunk
//! of the batch authenticated; the end of the stream (the final flag) is
//! authenticated before [`Decryptor`] reports the end.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use age_core::format::FileKey;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf;

use renkei_twin_sha256::{self as twin_sha256, Sha256};

use crate::writeback::DIRECT_ALIGN;

use age::secrecy::ExposeSecret as _;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Poly1305 tag bytes per chunk.
pub const TAG: usize = 16;
/// Ciphertext bytes per full chunk.
pub const SLOT: usize = CHUNK + TAG;
/// Bytes of the payload nonce at the start of the payload.
pub const NONCE: usize = 16;
/// Chunks per batch (2 MiB of plaintext).
pub const BATCH: usize = 32;

/// The payload key. Opaque: ring keeps the key bytes and exposes nothing;
/// no `Debug`.
pub struct PayloadKey(LessSafeKey);

impl PayloadKey {
    /// HKDF-SHA-256(ikm = file key, salt = nonce, info = "payload").
    pub fn derive(file_key: &FileKey, nonce: &[u8; NONCE]) -> PayloadKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, nonce).extract(file_key.expose_secret());
        let okm = prk
            .expand(&[b"payload"], &CHACHA20_POLY1305)
            .expect("32 bytes is a valid HKDF-SHA-256 length");
        PayloadKey(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

fn chunk_nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Seal the `n` chunks staged in `buf` (slot layout, `filled` plaintext
/// bytes), the last one final if `last`; return the ciphertext length
/// (the ciphertext is `buf[..len]`: full slots, then the last chunk).
fn seal_batch(
    key: &LessSafeKey,
    buf: &mut [u8],
    filled: usize,
    counter: u64,
    last: bool,
) -> Option<usize> {
    let n = filled.div_ceil(CHUNK).max(1);
    let mut len = 0;
    for (i, slot) in buf.chunks_mut(SLOT).take(n).enumerate() {
        let plain = (filled - i * CHUNK).min(CHUNK);
        let nonce = chunk_nonce(counter.checked_add(i as u64)?, last && i == n - 1);
        let (data, rest) = slot.split_at_mut(plain);
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::empty(), data)
            .ok()?;
        rest[..TAG].copy_from_slice(tag.as_ref());
        len = i * SLOT + plain + TAG;
    }
    Some(len)
}

/// Bytes of the payload file laid out as they will be on disk: a sealed
/// batch goes to the output without being copied into an aligned buffer
/// first. `bytes[base..]` starts at an address aligned to
/// [`DIRECT_ALIGN`]; the batch whose first chunk is at file offset `off`
/// is staged from `bytes[base + off % DIRECT_ALIGN]` on, so that
/// `bytes[base..]` lines up with the file's blocks. The output thread puts
/// the file's bytes before the first chunk (the tail of the previous
/// batch, or the header) in front of it and writes whole blocks straight
/// from the buffer.
struct Batch {
    bytes: Vec<u8>,
    base: usize,
}

impl Batch {
    fn new() -> Batch {
        let bytes = vec![0u8; DIRECT_ALIGN - 1 + BATCH * SLOT + DIRECT_ALIGN];
        let base = (DIRECT_ALIGN - bytes.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        Batch { bytes, base }
    }

    /// A buffer made by [`Batch::new`], given back.
    fn reuse(bytes: Vec<u8>) -> Batch {
        let base = (DIRECT_ALIGN - bytes.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        Batch { bytes, base }
    }

    /// No bytes: what the encryptor holds between handing a batch over
    /// and taking the next buffer.
    fn empty() -> Batch {
        Batch {
            bytes: Vec::new(),
            base: 0,
        }
    }

    /// Where the first chunk of a batch at file offset `off` goes.
    fn first_chunk(&self, off: u64) -> usize {
        self.base + (off % DIRECT_ALIGN as u64) as usize
    }
}

/// One batch for the sealing thread: chunks staged from `buf.bytes[at]`.
struct SealJob {
    buf: Batch,
    at: usize,
    filled: usize,
    counter: u64,
    last: bool,
}

/// A sealed batch: the ciphertext is `buf.bytes[at..at + len]` (`None`:
/// the counter overflowed).
struct SealedBatch {
    buf: Batch,
    at: usize,
    len: Option<usize>,
}

/// A sealed and hashed batch for the output thread: the ciphertext is
/// `buf.bytes[at..at + len]`.
struct Hashed {
    buf: Batch,
    at: usize,
    len: usize,
}

fn worker_gone() -> io::Error {
    io::Error::other("the payload encryption thread stopped")
}

/// Batches queued before the sealing and the writing thread: a few, so
/// that a thread the scheduler set aside for a moment finds work waiting
/// when it runs again (with one or two, the two cores were idle about
/// 15 % of the time: 171 % of a core busy instead of 185 %).
const QUEUED: usize = 4;

/// Batch buffers one encryption uses at most (32 MiB): one being staged,
/// the others queued for, in, or back from the sealing and the writing
/// thread.
const SEAL_BUFFERS: usize = 16;

/// What [`encrypt`] wrote.
pub struct Encrypted<W, T> {
    /// What the body returned.
    pub value: T,
    /// The output, flushed.
    pub out: W,
    /// Bytes written (header, nonce and payload).
    pub size: u64,
    /// SHA-256 of every byte written: the envelope ID.
    pub sha256: [u8; 32],
}

/// Encrypt a payload into `out`: write `header` and the payload nonce,
/// then the plaintext that `body` writes into the [`Encryptor`] it is
/// given, sealed in 64 KiB chunks, the last one final.
///
/// Three threads share the work, four while a long member is read: the
/// caller's (`body`: staging the tar records, reading members into the
/// batch being staged; then, for each batch, hashing its member bytes
/// side by side with the ciphertext of an earlier batch, the envelope ID,
/// see the `renkei-twin-sha256` crate), a sealing thread
/// (ChaCha20-Poly1305 of each batch), an output thread (writing the
/// hashed ciphertext to `out`, in order, as whole 4 KiB blocks from each
/// batch's buffer: see [`Batch`]; a direct write waits for the disk) and,
/// for a member longer than the rest of the current batch, a reading
/// thread ([`Encryptor::write_from`]). At most
/// [`SEAL_BUFFERS`] batch buffers exist. If `body` fails, or the output
/// fails, everything stops and the error is returned (the output's own
/// error when writing failed); what was written is then unusable and the
/// caller discards it.
pub fn encrypt<W, T, E>(
    mut out: W,
    file_key: &FileKey,
    header: &[u8],
    body: impl FnOnce(&mut Encryptor) -> Result<T, E>,
) -> Result<Encrypted<W, T>, E>
where
    W: Write + Send,
    E: From<io::Error>,
{
    use ring::rand::SecureRandom as _;
    let mut nonce = [0u8; NONCE];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| io::Error::other("the system random generator failed"))?;
    let key = PayloadKey::derive(file_key, &nonce).0;
    let (jobs, job_rx) = mpsc::sync_channel::<SealJob>(QUEUED);
    // Room for every buffer there is: the sealing and the writing thread
    // never wait to hand one back.
    let (sealed_tx, sealed) = mpsc::sync_channel::<SealedBatch>(SEAL_BUFFERS);
    let (free_tx, free) = mpsc::sync_channel::<Batch>(SEAL_BUFFERS);
    let (output_tx, output_rx) = mpsc::sync_channel::<Hashed>(QUEUED);
    std::thread::scope(|s| {
        let sealer = std::thread::Builder::new()
            .name("renkei-seal".into())
            .spawn_scoped(s, move || {
                for mut job in job_rx {
                    let len = seal_batch(
                        &key,
                        &mut job.buf.bytes[job.at..],
                        job.filled,
                        job.counter,
                        job.last,
                    );
                    let sealed = SealedBatch {
                        buf: job.buf,
                        at: job.at,
                        len,
                    };
                    if sealed_tx.send(sealed).is_err() {
                        break;
                    }
                }
            })?;
        let output = std::thread::Builder::new()
            .name("renkei-seal-out".into())
            .spawn_scoped(s, move || -> io::Result<(W, u64)> {
                // The bytes after the last whole block written: they go
                // in front of the next batch, in its buffer.
                let mut carry = [header, &nonce[..]].concat();
                let whole = carry.len() / DIRECT_ALIGN * DIRECT_ALIGN;
                out.write_all(&carry[..whole])?;
                carry.drain(..whole);
                let mut size = (header.len() + NONCE) as u64;
                for mut b in output_rx {
                    size += b.len as u64;
                    if b.at.checked_sub(carry.len()) == Some(b.buf.base) {
                        let start = b.buf.base;
                        b.buf.bytes[start..b.at].copy_from_slice(&carry);
                        let end = b.at + b.len;
                        let whole = start + (end - start) / DIRECT_ALIGN * DIRECT_ALIGN;
                        out.write_all(&b.buf.bytes[start..whole])?;
                        carry.clear();
                        carry.extend_from_slice(&b.buf.bytes[whole..end]);
                    } else {
                        // Not laid out as expected (never, as batches are
                        // staged): the same bytes, unaligned.
                        out.write_all(&carry)?;
                        out.write_all(&b.buf.bytes[b.at..b.at + b.len])?;
                        carry.clear();
                    }
                    // Never blocks: the channel holds every buffer there is.
                    let _ = free_tx.send(b.buf);
                }
                out.write_all(&carry)?;
                out.flush()?;
                Ok((out, size))
            })?;
        let mut cipher = Sha256::new();
        cipher.update(header);
        cipher.update(&nonce);
        let offset = (header.len() + NONCE) as u64;
        let buf = Batch::new();
        let mut enc = Encryptor {
            at: buf.first_chunk(offset),
            buf,
            offset,
            filled: 0,
            counter: 0,
            jobs: Some(jobs),
            sealed,
            free,
            output: Some(output_tx),
            ready: VecDeque::new(),
            ready_hashed: 0,
            spare: Vec::new(),
            cipher,
            at_sealer: 0,
            at_output: 0,
            made: 1,
            member: None,
        };
        let result = body(&mut enc).and_then(|value| {
            enc.submit(true)?;
            Ok((value, enc.finish()?))
        });
        // Closing the job and output channels ends both threads, whatever
        // happened.
        drop(enc);
        let sealer = sealer.join();
        let written = output.join().map_err(|_| worker_gone())?;
        match (result, written) {
            (_, Err(e)) => Err(e.into()),
            (Err(e), Ok(_)) => Err(e),
            (Ok((value, sha256)), Ok((out, size))) => {
                sealer.map_err(|_| worker_gone())?;
                Ok(Encrypted {
                    value,
                    out,
                    size,
                    sha256,
                })
            }
        }
    })
}

/// The member that [`Encryptor::write_from`] is reading: its hash so far,
/// and where its bytes not yet hashed start in the staged batch.
struct Member {
    hash: Sha256,
    from: usize,
}

/// The plaintext side of [`encrypt`], on the caller's thread: stages what
/// is written into 64 KiB chunks of 2 MiB batches, hands each full batch
/// to the sealing thread, and hashes the ciphertext that comes back before
/// passing it on to the output thread.
pub struct Encryptor {
    /// From `buf.bytes[at]` on, BATCH slots of SLOT bytes; plaintext is
    /// staged at the start of each slot, the tag goes after it.
    buf: Batch,
    at: usize,
    /// File offset of the current batch's first chunk.
    offset: u64,
    /// Plaintext bytes staged in the current batch.
    filled: usize,
    /// Index of the first chunk of the current batch.
    counter: u64,
    jobs: Option<mpsc::SyncSender<SealJob>>,
    /// Sealed batches, in order.
    sealed: mpsc::Receiver<SealedBatch>,
    /// Buffers the output thread is done with.
    free: mpsc::Receiver<Batch>,
    output: Option<mpsc::SyncSender<Hashed>>,
    /// Sealed batches whose ciphertext is not all hashed yet, in order;
    /// `ready_hashed` bytes of the first are.
    ready: VecDeque<Hashed>,
    ready_hashed: usize,
    /// Buffers back from the output thread, for the next batches.
    spare: Vec<Batch>,
    /// SHA-256 of the ciphertext so far: the envelope ID.
    cipher: Sha256,
    /// Batches at the sealing thread, and at the output thread.
    at_sealer: usize,
    at_output: usize,
    /// Buffers allocated so far (at most [`SEAL_BUFFERS`]).
    made: usize,
    member: Option<Member>,
}

impl Encryptor {
    /// Hand the staged batch to the sealing thread (the final one if
    /// `last`) and take a buffer for the next.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        self.hash_member()?;
        self.send_current(last)?;
        if last {
            self.jobs = None;
        } else {
            self.offset += (BATCH * SLOT) as u64;
            self.buf = self.next_buffer()?;
            self.at = self.buf.first_chunk(self.offset);
        }
        Ok(())
    }

    /// Hand the staged batch, hashed, to the sealing thread; `self.buf`
    /// is left empty.
    fn send_current(&mut self, last: bool) -> io::Result<()> {
        let n = self.filled.div_ceil(CHUNK).max(1) as u64;
        let job = SealJob {
            buf: std::mem::replace(&mut self.buf, Batch::empty()),
            at: self.at,
            filled: self.filled,
            counter: self.counter,
            last,
        };
        let jobs = self.jobs.as_ref().ok_or_else(worker_gone)?;
        jobs.send(job).map_err(|_| worker_gone())?;
        self.at_sealer += 1;
        self.counter += n;
        self.filled = 0;
        if let Some(m) = &mut self.member {
            m.from = 0;
        }
        Ok(())
    }

    /// A buffer for the next batch: one back from the output thread, a
    /// new one while fewer than [`SEAL_BUFFERS`] exist, or else the next
    /// one the output thread is done with.
    fn next_buffer(&mut self) -> io::Result<Batch> {
        loop {
            while let Ok(buf) = self.free.try_recv() {
                self.at_output -= 1;
                self.spare.push(buf);
            }
            if let Some(buf) = self.spare.pop() {
                return Ok(buf);
            }
            if self.made < SEAL_BUFFERS {
                self.made += 1;
                return Ok(Batch::new());
            }
            if self.at_output > 0 {
                let buf = self.free.recv().map_err(|_| worker_gone())?;
                self.at_output -= 1;
                return Ok(buf);
            }
            // Every buffer is sealed or being sealed: hash what is sealed
            // (alone, no member bytes are waiting) and pass it on.
            if self.ready.is_empty() {
                self.collect(true)?;
            }
            self.hash_ready_alone()?;
        }
    }

    /// Take the sealed batches that are there (and wait for one if
    /// `wait`).
    fn collect(&mut self, wait: bool) -> io::Result<()> {
        let mut first = if wait {
            Some(self.sealed.recv().map_err(|_| worker_gone())?)
        } else {
            None
        };
        while let Some(batch) = first.take().or_else(|| self.sealed.try_recv().ok()) {
            self.at_sealer -= 1;
            let len = batch.len.ok_or_else(|| {
                io::Error::other("the payload is too long (chunk counter overflow)")
            })?;
            self.ready.push_back(Hashed {
                buf: batch.buf,
                at: batch.at,
                len,
            });
        }
        Ok(())
    }

    /// Hash the member bytes staged since the last call, each beside the
    /// same number of ciphertext bytes that are ready (alone once there are
    /// none), and pass on every sealed batch hashed to its end.
    fn hash_member(&mut self) -> io::Result<()> {
        if self.member.is_none() {
            return Ok(());
        }
        self.collect(false)?;
        let Some(member) = self.member.as_mut() else {
            return Ok(());
        };
        let mut at = member.from;
        while at < self.filled {
            let slot = at / CHUNK;
            let end = self.filled.min((slot + 1) * CHUNK);
            let area = &self.buf.bytes[self.at + slot * SLOT..];
            let mut piece = &area[at % CHUNK..end - slot * CHUNK];
            at = end;
            while !piece.is_empty() {
                let Some(c) = self.ready.front() else {
                    member.hash.update(piece);
                    break;
                };
                let clen = c.len;
                let c = &c.buf.bytes[c.at + self.ready_hashed..c.at + clen];
                let n = piece.len().min(c.len());
                twin_sha256::update_pair(&mut member.hash, &piece[..n], &mut self.cipher, &c[..n]);
                piece = &piece[n..];
                self.ready_hashed += n;
                if self.ready_hashed == clen {
                    let batch = self.ready.pop_front().expect("the front batch");
                    self.ready_hashed = 0;
                    let output = self.output.as_ref().ok_or_else(worker_gone)?;
                    output.send(batch).map_err(|_| worker_gone())?;
                    self.at_output += 1;
                }
            }
        }
        member.from = self.filled;
        Ok(())
    }

    /// Hash the ciphertext of every sealed batch taken and pass it on.
    fn hash_ready_alone(&mut self) -> io::Result<()> {
        while let Some(b) = self.ready.pop_front() {
            self.cipher
                .update(&b.buf.bytes[b.at + self.ready_hashed..b.at + b.len]);
            self.ready_hashed = 0;
            let output = self.output.as_ref().ok_or_else(worker_gone)?;
            output.send(b).map_err(|_| worker_gone())?;
            self.at_output += 1;
        }
        Ok(())
    }

    /// After the last batch: hash the rest of the ciphertext, pass it on,
    /// close the output thread's channel, and return the envelope ID.
    fn finish(&mut self) -> io::Result<[u8; 32]> {
        while self.at_sealer > 0 {
            self.collect(true)?;
        }
        self.hash_ready_alone()?;
        self.output = None;
        Ok(std::mem::take(&mut self.cipher).finish())
    }

    /// Read `input` to its end straight into the batches (no copy in
    /// between); return the number of bytes read and their SHA-256.
    ///
    /// The rest of the current batch is read on this thread; the batches
    /// after it on a reading thread, [`AHEAD`] batches ahead, while this
    /// one hashes (the kernel's copy of a large member is then off the
    /// thread that hashes every byte).
    pub fn write_from<R: Read + Send>(&mut self, input: &mut R) -> io::Result<(u64, [u8; 32])> {
        self.member = Some(Member {
            hash: Sha256::new(),
            from: self.filled,
        });
        let read = self.read_member(input).and_then(|total| {
            self.hash_member()?;
            Ok(total)
        });
        let member = self.member.take().expect("set above");
        Ok((read?, member.hash.finish()))
    }

    fn read_member<R: Read + Send>(&mut self, input: &mut R) -> io::Result<u64> {
        let mut total = 0u64;
        while self.filled < BATCH * CHUNK {
            let slot = self.filled / CHUNK;
            let start = self.at + slot * SLOT;
            let room = &mut self.buf.bytes[start + self.filled % CHUNK..start + CHUNK];
            let n = read_retrying(input, room)?;
            if n == 0 {
                return Ok(total);
            }
            self.filled += n;
            total += n as u64;
        }
        // The current batch is full. It is sealed only once more data
        // comes (the last chunk of the stream carries the final flag):
        // the next batch read tells.
        std::thread::scope(|s| {
            let (to_reader, jobs) = mpsc::sync_channel::<(Batch, usize)>(AHEAD);
            let (back, filled) = mpsc::sync_channel::<io::Result<(Batch, usize, usize)>>(AHEAD);
            let reader = std::thread::Builder::new()
                .name("renkei-seal-read".into())
                .spawn_scoped(s, move || {
                    let mut jobs = jobs.into_iter();
                    for (mut buf, at) in jobs.by_ref() {
                        let r = fill_batch(input, &mut buf.bytes[at..]).map(|n| (buf, at, n));
                        let full = matches!(r, Ok((_, _, n)) if n == BATCH * CHUNK);
                        if back.send(r).is_err() || !full {
                            break;
                        }
                    }
                    // The buffers handed over and not read into, back
                    // once the caller stops handing any.
                    jobs.map(|(buf, _)| buf).collect::<Vec<_>>()
                })?;
            let mut ahead = 0;
            let mut next_offset = self.offset;
            loop {
                while ahead < AHEAD {
                    next_offset += (BATCH * SLOT) as u64;
                    let buf = self.next_buffer()?;
                    let at = buf.first_chunk(next_offset);
                    if let Err(mpsc::SendError((buf, _))) = to_reader.send((buf, at)) {
                        // The reader stopped; its last answer says why.
                        self.spare.push(buf);
                        break;
                    }
                    ahead += 1;
                }
                self.hash_member()?;
                let (buf, at, n) = filled.recv().map_err(|_| reader_gone())??;
                ahead -= 1;
                let end = n < BATCH * CHUNK;
                if n == 0 {
                    self.spare.push(buf);
                } else {
                    self.send_current(false)?;
                    self.offset += (BATCH * SLOT) as u64;
                    self.buf = buf;
                    self.at = at;
                    self.filled = n;
                    total += n as u64;
                }
                if end {
                    drop(to_reader);
                    let rest = reader.join().map_err(|_| reader_gone())?;
                    self.spare.extend(rest);
                    return Ok(total);
                }
            }
        })
    }
}

/// Read `input` into the chunks of one batch (`area`: BATCH slots of SLOT
/// bytes), each chunk full before the next; return the bytes read (less
/// than a batch only at the end of `input`).
fn fill_batch(input: &mut impl Read, area: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < BATCH * CHUNK {
        let start = filled / CHUNK * SLOT;
        let n = read_retrying(input, &mut area[start + filled % CHUNK..start + CHUNK])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Batches read ahead of the hashing when a member is longer than what is
/// left of the current batch.
const AHEAD: usize = 4;

fn reader_gone() -> io::Error {
    io::Error::other("the payload reading thread stopped")
}

fn read_retrying(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

impl Write for Encryptor {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full batch is sealed only once more data arrives: the last
        // chunk of the stream must carry the final flag.
        if self.filled == BATCH * CHUNK {
            self.submit(false)?;
        }
        let slot = self.filled / CHUNK;
        let at = self.filled % CHUNK;
        let n = data.len().min(CHUNK - at);
        let start = self.at + slot * SLOT + at;
        self.buf.bytes[start..start + n].copy_from_slice(&data[..n]);
        self.filled += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One batch of ciphertext, read to `buf.bytes[at..at + body]`.
struct OpenJob {
    buf: Batch,
    at: usize,
    body: usize,
    counter: u64,
    last: bool,
}

/// An opened batch: its plaintext, contiguous in `buf.bytes`, or `None`
/// if a chunk failed.
struct OpenedBatch {
    buf: Batch,
    plain: Option<Range<usize>>,
    last: bool,
}

/// Open every chunk of `job` in place, each chunk's plaintext moved down
/// over the tags before it (ring's AEAD reads and writes through separate
/// pointers, so the move costs nothing): the batch's plaintext ends up
/// contiguous from `job.at` on.
fn open_batch(key: &LessSafeKey, job: &mut OpenJob) -> Option<Range<usize>> {
    let n = job.body.div_ceil(SLOT);
    let end = job.at + job.body;
    let mut plain = job.at;
    for i in 0..n {
        let chunk = job.at + i * SLOT;
        let nonce = chunk_nonce(job.counter.checked_add(i as u64)?, job.last && i == n - 1);
        let in_out = &mut job.buf.bytes[plain..end.min(chunk + SLOT)];
        plain += key
            .open_within(nonce, Aad::empty(), in_out, chunk - plain..)
            .ok()?
            .len();
    }
    Some(job.at..plain)
}

/// An opened batch's buffer, shared by the [`Decryptor`] and the
/// [`Piece`]s of it lent out; whoever lets go of it last gives the buffer
/// back to the opening thread.
struct Shared {
    bytes: Vec<u8>,
    spare: mpsc::SyncSender<Vec<u8>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A full channel or a stopped thread: the buffer is freed instead.
        let _ = self.spare.try_send(std::mem::take(&mut self.bytes));
    }
}

/// Plaintext lent out of an opened batch ([`Decryptor::piece`]): the
/// batch's buffer is not reused before the piece is dropped.
pub struct Piece {
    batch: Arc<Shared>,
    range: Range<usize>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.batch.bytes[self.range.clone()]
    }
}

/// Decrypts a payload read from `input` (positioned after the header).
/// Reads return plaintext only from batches whose every chunk
/// authenticated; a damaged, truncated or extended payload is an
/// [`io::ErrorKind::InvalidData`] error, and end of stream (`Ok(0)`) is
/// reported only after the final chunk authenticated.
///
/// An opening thread, spawned in the caller's scope, reads the ciphertext
/// and opens it batch by batch, one batch ahead of the caller, who only
/// consumes plaintext: reading the package costs the caller's thread
/// nothing. The plaintext is read with [`Read`] (copied), or taken as
/// [`Piece`]s of the opened batches themselves ([`Decryptor::piece`]),
/// which [`Decryptor::align_at`] can make start at block boundaries for
/// direct writes. At most three batch buffers are in use besides the
/// pieces lent out: the one being consumed, one opened and waiting, one
/// being read and opened.
pub struct Decryptor {
    opened: mpsc::Receiver<io::Result<OpenedBatch>>,
    /// Buffers the caller is done with, back to the opening thread.
    spare: mpsc::SyncSender<Vec<u8>>,
    /// The batch being consumed, and its plaintext not yet returned.
    current: Option<(Arc<Shared>, Range<usize>)>,
    /// Plaintext bytes returned so far.
    position: u64,
    /// Where the opening thread stages the batches it reads next: an
    /// offset into the block (see [`Decryptor::align_at`]).
    shift: Arc<AtomicUsize>,
    /// The final chunk authenticated and was returned.
    done: bool,
    failed: bool,
}

fn damaged() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the age payload failed authentication",
    )
}

fn opener_gone() -> io::Error {
    io::Error::other("the payload opening thread stopped")
}

impl Decryptor {
    /// Start decrypting `input` on an opening thread of `scope`; dropping
    /// the decryptor stops the thread at its next batch, and the scope
    /// waits for it.
    pub fn new<'scope, 'env, R: Read + Send + 'scope>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        input: R,
        file_key: FileKey,
    ) -> Self {
        let (tx, opened) = mpsc::sync_channel(1);
        let (spare, spares) = mpsc::sync_channel(2);
        let shift = Arc::new(AtomicUsize::new(0));
        let staging = Arc::clone(&shift);
        // Should the thread not start, its channel closes with it and the
        // first read says so.
        let _ = std::thread::Builder::new()
            .name("renkei-open".into())
            .spawn_scoped(scope, move || {
                let mut opener = Opener {
                    input,
                    carry: None,
                    counter: 0,
                    spares,
                    shift: staging,
                };
                if let Err(e) = opener.run(file_key, &tx) {
                    let _ = tx.send(Err(e));
                }
            });
        Decryptor {
            opened,
            spare,
            current: None,
            position: 0,
            shift,
            done: false,
            failed: false,
        }
    }

    /// Plaintext bytes returned (read or lent) so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Ask that plaintext byte `offset` (of the whole stream) and every
    /// 4 KiB after it fall at block-aligned addresses in the batches
    /// opened from now on, so that pieces of a member starting there can
    /// be written with `O_DIRECT` straight from the batch. Batches already
    /// opened keep their layout; only speed depends on this.
    pub fn align_at(&self, offset: u64) {
        // Every batch but the last holds a multiple of 4 KiB, so the
        // offset within the block is the same in all of them.
        let shift = (DIRECT_ALIGN - (offset % DIRECT_ALIGN as u64) as usize) % DIRECT_ALIGN;
        self.shift.store(shift, Ordering::Relaxed);
    }

    /// The next plaintext, at most `max` bytes (and not beyond the
    /// current batch), lent out of the opened batch without a copy;
    /// `None` at the end of the stream.
    pub fn piece(&mut self, max: usize) -> io::Result<Option<Piece>> {
        if !self.fill()? || max == 0 {
            return Ok(None);
        }
        let (batch, range) = self.current.as_mut().expect("filled");
        let n = max.min(range.len());
        let piece = Piece {
            batch: Arc::clone(batch),
            range: range.start..range.start + n,
        };
        range.start += n;
        self.position += n as u64;
        Ok(Some(piece))
    }

    /// Make sure the current batch has plaintext left: `false` at the
    /// end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.failed {
            return Err(damaged());
        }
        loop {
            if let Some((_, range)) = &self.current {
                if !range.is_empty() {
                    return Ok(true);
                }
                if self.done {
                    return Ok(false);
                }
            }
            if let Err(e) = self.next_batch() {
                self.failed = e.kind() == io::ErrorKind::InvalidData;
                self.current = None;
                return Err(e);
            }
        }
    }

    /// Make the next opened batch current. The current one is read to its
    /// end: its buffer goes back to the opening thread first (unless a
    /// piece of it is still lent out), so that the thread, unblocked by
    /// this receive, reuses it instead of allocating another.
    fn next_batch(&mut self) -> io::Result<()> {
        self.current = None;
        let b = self.opened.recv().map_err(|_| opener_gone())??;
        let shared = Arc::new(Shared {
            bytes: b.buf.bytes,
            spare: self.spare.clone(),
        });
        let plain = b.plain.ok_or_else(damaged)?;
        self.current = Some((shared, plain));
        self.done = b.last;
        Ok(())
    }
}

/// The opening thread's side: reads batches of ciphertext, checks their
/// chunk boundaries and opens them, in order.
struct Opener<R> {
    input: R,
    /// A byte read ahead of the last batch read (to learn it was not last).
    carry: Option<u8>,
    counter: u64,
    spares: mpsc::Receiver<Vec<u8>>,
    shift: Arc<AtomicUsize>,
}

impl<R: Read> Opener<R> {
    /// Read the nonce, derive the key, then open every batch until the
    /// final one, a failed one, or the caller leaving.
    fn run(
        &mut self,
        file_key: FileKey,
        out: &mpsc::SyncSender<io::Result<OpenedBatch>>,
    ) -> io::Result<()> {
        let mut nonce = [0u8; NONCE];
        let mut got = 0;
        while got < NONCE {
            match self.input.read(&mut nonce[got..]) {
                Ok(0) => return Err(damaged()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let key = PayloadKey::derive(&file_key, &nonce).0;
        drop(file_key);
        loop {
            let mut job = self.read_batch()?;
            let plain = open_batch(&key, &mut job);
            let stop = job.last || plain.is_none();
            let batch = OpenedBatch {
                buf: job.buf,
                plain,
                last: job.last,
            };
            if out.send(Ok(batch)).is_err() || stop {
                return Ok(());
            }
        }
    }

    /// Read the next batch of ciphertext and check its chunk boundaries.
    fn read_batch(&mut self) -> io::Result<OpenJob> {
        let mut buf = match self.spares.try_recv() {
            Ok(bytes) => Batch::reuse(bytes),
            Err(_) => Batch::new(),
        };
        let start = buf.base + self.shift.load(Ordering::Relaxed) % DIRECT_ALIGN;
        let area = &mut buf.bytes[start..start + BATCH * SLOT + 1];
        let mut at = 0;
        if let Some(b) = self.carry.take() {
            area[0] = b;
            at = 1;
        }
        while at < area.len() {
            match self.input.read(&mut area[at..]) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let last = at <= BATCH * SLOT;
        let body = if last {
            at
        } else {
            self.carry = Some(area[BATCH * SLOT]);
            BATCH * SLOT
        };
        // Chunk boundaries: full slots, then (if last) a final chunk of at
        // least a tag; an empty final chunk only as the very first chunk.
        let n = body.div_ceil(SLOT);
        if last {
            if n == 0 {
                return Err(damaged());
            }
            let tail = body - (n - 1) * SLOT;
            if tail < TAG || (tail == TAG && (self.counter > 0 || n > 1)) {
                return Err(damaged());
            }
        }
        let job = OpenJob {
            buf,
            at: start,
            body,
            counter: self.counter,
            last,
        };
        self.counter += n as u64;
        Ok(job)
    }
}

impl Read for Decryptor {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || !self.fill()? {
            return Ok(0);
        }
        let (batch, range) = self.current.as_mut().expect("filled");
        let n = out.len().min(range.len());
        out[..n].copy_from_slice(&batch.bytes[range.start..range.start + n]);
        range.start += n;
        self.position += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::digest::SHA256;

    fn key() -> FileKey {
        FileKey::new(Box::new([7u8; 16]))
    }

    fn seal(plain: &[u8], pieces: usize) -> Vec<u8> {
        let e = encrypt(Vec::new(), &key(), b"", |e| -> io::Result<()> {
            for p in plain.chunks(pieces.max(1)) {
                e.write_all(p)?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(e.size, e.out.len() as u64);
        assert_eq!(
            e.sha256[..],
            ring::digest::digest(&SHA256, &e.out).as_ref()[..]
        );
        e.out
    }

    fn open(ct: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        std::thread::scope(|s| Decryptor::new(s, ct, key()).read_to_end(&mut out))?;
        Ok(out)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_chunk_and_batch_boundaries() {
        for n in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK,
            BATCH * CHUNK - 1,
            BATCH * CHUNK,
            BATCH * CHUNK + 1,
            2 * BATCH * CHUNK,
            2 * BATCH * CHUNK + 5,
        ] {
            let p = data(n);
            for pieces in [1000, 65536, 1 << 20] {
                let ct = seal(&p, pieces);
                let chunks = n.div_ceil(CHUNK).max(1);
                assert_eq!(ct.len(), NONCE + n + chunks * TAG, "{n}");
                assert_eq!(open(&ct).unwrap(), p, "{n}");
            }
        }
    }

    #[test]
    fn reading_straight_into_batches_round_trips_and_hashes_every_byte() {
        // write_from at chunk and batch boundaries, alone and between
        // ordinary writes; a reader that returns short reads.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(40_000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        for n in [
            0,
            1,
            CHUNK,
            BATCH * CHUNK - 1,
            BATCH * CHUNK,
            BATCH * CHUNK + 1,
            2 * BATCH * CHUNK,
        ] {
            let p = data(n);
            for before in [0usize, 3] {
                let e = encrypt(Vec::new(), &key(), b"", |e| -> io::Result<u64> {
                    e.write_all(&p[..before.min(n)])?;
                    let (got, hash) = e.write_from(&mut Trickle(&p[before.min(n)..]))?;
                    assert_eq!(
                        hash[..],
                        ring::digest::digest(&SHA256, &p[before.min(n)..]).as_ref()[..]
                    );
                    Ok(got)
                })
                .unwrap();
                assert_eq!(e.value, (n - before.min(n)) as u64);
                assert_eq!(e.out.len(), NONCE + n + n.div_ceil(CHUNK).max(1) * TAG);
                assert_eq!(open(&e.out).unwrap(), p, "{n} {before}");
            }
        }
    }

    #[test]
    fn a_member_that_fails_while_read_ahead_fails_the_encryption() {
        // The error of a member read on the reading thread, at the start,
        // inside and at the end of batches, reaches the caller; nothing
        // waits forever.
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk gone"));
                }
                let n = buf.len().min(self.0).min(50_000);
                buf[..n].fill(3);
                self.0 -= n;
                Ok(n)
            }
        }
        for after in [
            0,
            1,
            CHUNK,
            BATCH * CHUNK,
            3 * BATCH * CHUNK + 5,
            7 * BATCH * CHUNK,
        ] {
            let r = encrypt(Vec::new(), &key(), b"", |e| {
                e.write_all(b"tar header")?;
                e.write_from(&mut Failing(after)).map(|_| ())
            });
            let e = r.err().expect("the read error");
            assert_eq!(e.to_string(), "disk gone", "{after}");
        }
    }

    #[test]
    fn sealed_batches_reach_the_output_as_whole_aligned_blocks() {
        // What a direct write needs: the output receives the ciphertext
        // as writes that start at a block of the file, from an aligned
        // address, in whole blocks; only the bytes where batches meet
        // (less than a block each) and the header arrive otherwise.
        #[derive(Default)]
        struct Blocks {
            bytes: Vec<u8>,
            aligned: usize,
        }
        impl Write for Blocks {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                if self.bytes.len().is_multiple_of(DIRECT_ALIGN)
                    && (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
                    && data.len().is_multiple_of(DIRECT_ALIGN)
                {
                    self.aligned += data.len();
                }
                self.bytes.extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let p = data(9 * BATCH * CHUNK + 777);
        for header in [&b""[..], &[b'h'; 317], &[b'h'; 4096], &[b'h'; 9000]] {
            let e = encrypt(Blocks::default(), &key(), header, |e| {
                e.write_from(&mut &p[..]).map(|_| ())
            })
            .unwrap();
            let out = e.out.bytes;
            assert_eq!(e.size, out.len() as u64);
            assert_eq!(
                e.sha256[..],
                ring::digest::digest(&SHA256, &out).as_ref()[..]
            );
            assert_eq!(open(&out[header.len()..]).unwrap(), p);
            let batches = 10;
            let unaligned = out.len() - e.out.aligned;
            assert!(
                unaligned <= header.len() + (batches + 1) * DIRECT_ALIGN,
                "{} of {} bytes not in aligned blocks",
                unaligned,
                out.len()
            );
        }
    }

    #[test]
    fn the_age_crate_reads_what_we_write_and_we_read_what_it_writes() {
        // Through whole age files: our header and payload against the age
        // crate's decryptor, and the age crate's encryptor against ours.
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        for n in [0, 5, CHUNK, CHUNK + 1, BATCH * CHUNK + 3] {
            let p = data(n);
            let fk = crate::package::header::new_file_key();
            let head = crate::package::header::write(&fk, &[&r]).unwrap();
            let Encrypted {
                out: file,
                size,
                sha256: digest,
                ..
            } = encrypt(Vec::new(), &fk, &head, |e| e.write_all(&p)).unwrap();
            assert_eq!(size, file.len() as u64);
            assert_eq!(
                digest[..],
                ring::digest::digest(&SHA256, &file).as_ref()[..]
            );
            let d = age::Decryptor::new(&file[..]).unwrap();
            let mut got = Vec::new();
            d.decrypt(std::iter::once(&id as &dyn age::Identity))
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, p, "{n}");

            let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
                .unwrap();
            let mut theirs = Vec::new();
            let mut w = enc.wrap_output(&mut theirs).unwrap();
            w.write_all(&p).unwrap();
            w.finish().unwrap();
            let h = crate::package::header::parse(&theirs).unwrap();
            let fk = h.unwrap(&theirs, &id).ok().unwrap();
            let mut got = Vec::new();
            std::thread::scope(|s| Decryptor::new(s, &theirs[h.len..], fk).read_to_end(&mut got))
                .unwrap();
            assert_eq!(got, p, "{n}");
        }
    }

    #[test]
    fn damage_truncation_and_extension_are_refused() {
        let n = 2 * BATCH * CHUNK + 100;
        let ct = seal(&data(n), 1 << 16);
        let chunks = n.div_ceil(CHUNK);
        // A flipped bit in the nonce, the first, a middle and the last chunk.
        for at in [0, NONCE, NONCE + SLOT * 40 + 7, ct.len() - 1] {
            let mut t = ct.clone();
            t[at] ^= 0x20;
            assert!(open(&t).is_err(), "flip at {at}");
        }
        // Cut anywhere, including at every chunk boundary.
        for k in 0..chunks {
            assert!(
                open(&ct[..NONCE + k * SLOT]).is_err(),
                "cut after {k} chunks"
            );
        }
        for cut in [0, 3, NONCE + 1, NONCE + TAG, ct.len() - 1] {
            assert!(open(&ct[..cut]).is_err(), "cut at {cut}");
        }
        // Appended bytes (a partial chunk after the final one).
        for extra in [1usize, TAG, TAG + 1, SLOT] {
            let mut t = ct.clone();
            t.extend(std::iter::repeat_n(0u8, extra));
            assert!(open(&t).is_err(), "{extra} bytes appended");
        }
    }

    /// Seal chunks by hand with chosen flags.
    fn hand_sealed(chunks: &[(&[u8], bool)]) -> Vec<u8> {
        let nonce = [9u8; NONCE];
        let k = PayloadKey::derive(&key(), &nonce);
        let mut out = nonce.to_vec();
        for (i, (p, last)) in chunks.iter().enumerate() {
            let mut b = p.to_vec();
            k.0.seal_in_place_append_tag(chunk_nonce(i as u64, *last), Aad::empty(), &mut b)
                .unwrap();
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn final_flag_misuse_and_empty_last_chunks_are_refused() {
        let full = data(CHUNK);
        // Control: one full final chunk; one empty final chunk alone.
        assert_eq!(open(&hand_sealed(&[(&full, true)])).unwrap(), full);
        assert!(open(&hand_sealed(&[(b"", true)])).unwrap().is_empty());
        // No final flag anywhere (truncated at a chunk boundary).
        assert!(open(&hand_sealed(&[(&full, false)])).is_err());
        assert!(open(&hand_sealed(&[(&full, false), (&full, false)])).is_err());
        // The final flag on a chunk that is not last.
        assert!(open(&hand_sealed(&[(&full, true), (b"x", true)])).is_err());
        assert!(open(&hand_sealed(&[(&full, true), (&full, false)])).is_err());
        // An empty final chunk after a full one.
        assert!(open(&hand_sealed(&[(&full, false), (b"", true)])).is_err());
        // A short chunk that is not last.
        assert!(open(&hand_sealed(&[(b"short", false), (b"x", true)])).is_err());
        // Chunks swapped.
        let a = hand_sealed(&[(&full, false), (b"end", true)]);
        let mut swapped = a[..NONCE].to_vec();
        swapped.extend_from_slice(&a[NONCE + SLOT..]);
        swapped.extend_from_slice(&a[NONCE..NONCE + SLOT]);
        assert!(open(&swapped).is_err());
    }

    #[test]
    fn nothing_from_a_damaged_batch_is_released() {
        // The damage is in the batch's last chunk: not one byte of the
        // batch's earlier, intact chunks may come out.
        let n = BATCH * CHUNK / 2;
        let mut ct = seal(&data(n), 1 << 16);
        let last = ct.len() - 1;
        ct[last] ^= 1;
        std::thread::scope(|s| {
            let mut d = Decryptor::new(s, &ct[..], key());
            let mut buf = vec![0u8; 4096];
            assert_eq!(
                d.read(&mut buf).unwrap_err().kind(),
                io::ErrorKind::InvalidData
            );
            assert!(d.read(&mut buf).is_err());
        });
    }

    #[test]
    fn pieces_are_the_plaintext_and_follow_the_alignment_asked_for() {
        let plain = data(BATCH * CHUNK * 6 + 777);
        let ct = seal(&plain, 1 << 20);
        // What a member after a tar header sees: 1,536 bytes read by
        // copying, then the rest taken as pieces, every one kept until the
        // end (a lent batch's buffer must not be reused meanwhile).
        let (head, pieces, offsets) = std::thread::scope(|s| {
            let mut d = Decryptor::new(s, &ct[..], key());
            let mut head = vec![0u8; 1536];
            d.read_exact(&mut head).unwrap();
            d.align_at(d.position());
            let (mut pieces, mut offsets) = (Vec::new(), Vec::new());
            loop {
                let at = d.position();
                match d.piece(usize::MAX).unwrap() {
                    Some(p) => {
                        pieces.push(p);
                        offsets.push(at);
                    }
                    None => break,
                }
            }
            assert!(d.piece(1).unwrap().is_none());
            (head, pieces, offsets)
        });
        let mut got = head;
        for p in &pieces {
            got.extend_from_slice(p.as_ref());
        }
        assert!(got == plain, "pieces differ from the plaintext");
        assert_eq!(pieces.len(), 7, "one piece per batch");
        // Batches opened after the request (the opening thread may have
        // read three before it) put the member's blocks at aligned
        // addresses: stream offset `at` at an address congruent to
        // `at - 1536`.
        let lined_up = |(p, at): (&Piece, &u64)| {
            (p.as_ref().as_ptr() as usize) % DIRECT_ALIGN
                == ((at - 1536) % DIRECT_ALIGN as u64) as usize
        };
        assert!(pieces.iter().zip(&offsets).skip(3).all(lined_up));
    }

    #[test]
    fn a_damaged_batch_lends_no_piece() {
        let mut ct = seal(&data(BATCH * CHUNK * 2 + 5), 1 << 20);
        let mid = ct.len() - 100;
        ct[mid] ^= 1;
        std::thread::scope(|s| {
            let mut d = Decryptor::new(s, &ct[..], key());
            let mut n = 0;
            let err = loop {
                match d.piece(usize::MAX) {
                    Ok(Some(p)) => n += p.as_ref().len(),
                    Ok(None) => panic!("the damaged stream ended cleanly"),
                    Err(e) => break e,
                }
            };
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            // The damage is in the second batch's last chunk (the third
            // holds only the final 5 bytes): only the first batch came out.
            assert_eq!(n, BATCH * CHUNK);
            assert!(d.piece(usize::MAX).is_err());
        });
    }
}
