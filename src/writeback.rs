//! Writing large files so that making them durable is cheap.
//!
//! renkei fsyncs what it must not lose (a sealed package before it is
//! named, every opened member before the folder is released). Written
//! through the page cache and flushed only at the end, a package of
//! several GiB would first fill memory with dirty pages and then wait for
//! all of them at the fsync. Instead, after every [`WINDOW`] bytes the
//! kernel is asked to start writing the window to disk at once (Linux:
//! `posix_fadvise(DONTNEED)`, which starts asynchronous writeback of the
//! window's dirty pages; pages still dirty or being written stay cached),
//! so the disk works while renkei computes and the final fsync waits only
//! for the tail.
//! The advice changes no data and no guarantee: durability still comes
//! from the fsync alone.
//!
//! [`WriteBehind`] also moves the writing itself to a thread of its own.
//!
//! [`Direct`] goes further for large pieces that start at an aligned
//! address ([`AlignedBuf`]): it writes them with `O_DIRECT`, from the
//! buffer straight to the disk, without copying them into the page cache
//! and without leaving anything for the fsync to wait for but the file's
//! metadata. Smaller or unaligned pieces, and file systems that refuse
//! `O_DIRECT`, go through the page cache as above.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// Bytes written between two writeback starts.
pub const WINDOW: u64 = 8 << 20;

/// Counts what is written sequentially to a new file (from offset 0) and
/// starts the writeback of every full [`WINDOW`].
#[derive(Default)]
pub struct Writeback {
    written: u64,
    started: u64,
}

impl Writeback {
    /// Note that `n` more bytes were written to `file`.
    pub fn wrote(&mut self, file: &File, n: usize) {
        self.written += n as u64;
        if self.written - self.started >= WINDOW {
            start(file, self.started, self.written - self.started);
            self.started = self.written;
        }
    }
}

/// A new file written sequentially from its start, with the writeback of
/// each window started as it fills.
pub struct Sequential<'a> {
    file: &'a File,
    writeback: Writeback,
}

impl<'a> Sequential<'a> {
    /// Write `file` (new and empty).
    pub fn new(file: &'a File) -> Sequential<'a> {
        Sequential {
            file,
            writeback: Writeback::default(),
        }
    }
}

impl Write for Sequential<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&*self.file).write(buf)?;
        self.writeback.wrote(self.file, n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn start(file: &File, offset: u64, len: u64) {
    // Advice only: an error changes nothing (the fsync still decides).
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

#[cfg(not(target_os = "linux"))]
fn start(_file: &File, _offset: u64, _len: u64) {}

/// What `O_DIRECT` needs aligned: the buffer's address, the length and
/// the file offset of every transfer (the logical block size of the
/// devices renkei runs on is at most this).
pub const DIRECT_ALIGN: usize = 4096;

/// Pieces smaller than this go through the page cache even when aligned:
/// a direct write waits for the disk, which is worth it only for large
/// pieces.
const DIRECT_MIN: usize = 256 << 10;

/// A buffer of at most `capacity` bytes whose first byte is at a
/// [`DIRECT_ALIGN`]-aligned address, for [`Direct`].
pub struct AlignedBuf {
    /// `start` bytes of padding, then `capacity` bytes of room; never
    /// reallocated.
    bytes: Vec<u8>,
    start: usize,
    capacity: usize,
    len: usize,
}

impl AlignedBuf {
    /// An empty buffer for `capacity` bytes.
    pub fn new(capacity: usize) -> AlignedBuf {
        let bytes = vec![0u8; capacity + DIRECT_ALIGN];
        let start = (DIRECT_ALIGN - bytes.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        AlignedBuf {
            bytes,
            start,
            capacity,
            len: 0,
        }
    }

    /// The bytes held.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    /// How many bytes are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left before `capacity`.
    pub fn room(&self) -> usize {
        self.capacity - self.len
    }

    /// The room, to put bytes into; say how many with
    /// [`AlignedBuf::advance`].
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start + self.len..self.start + self.capacity]
    }

    /// `n` bytes were put at the start of [`AlignedBuf::space`].
    pub fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity);
    }

    /// Append at most [`AlignedBuf::room`] bytes of `data`; returns how
    /// many were taken.
    pub fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        self.space()[..n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Drop the bytes held (the room is back to `capacity`).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Bytes for a buffer that will hold `expected` bytes at most, and never
/// more than `max`: whole [`DIRECT_ALIGN`] blocks, at least one.
pub fn buffer_for(expected: u64, max: usize) -> usize {
    let want = usize::try_from(expected).unwrap_or(usize::MAX).min(max);
    want.div_ceil(DIRECT_ALIGN).max(1) * DIRECT_ALIGN
}

/// Bytes per piece of a [`Pieces`] writer.
const PIECE: usize = 1 << 20;

/// A [`Direct`] writer fed with pieces of any size and alignment: it
/// gathers them into an aligned buffer and writes it whenever it holds
/// [`PIECE`] bytes; a large piece at an aligned address that continues the
/// file at a block boundary is written straight from the caller's buffer
/// instead (the sealed batches of `package::payload` are laid out so).
/// [`Pieces::flush`] writes what is left (the tail); the caller fsyncs.
pub struct Pieces {
    buf: AlignedBuf,
    out: Direct,
}

impl Default for Pieces {
    fn default() -> Self {
        Pieces {
            buf: AlignedBuf::new(PIECE),
            out: Direct::default(),
        }
    }
}

impl Pieces {
    /// Append all of `data` to `file` (new, and written only through
    /// this).
    pub fn write_all(&mut self, file: &File, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if data.len() >= DIRECT_MIN
                && (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
                && self.buf.len().is_multiple_of(DIRECT_ALIGN)
            {
                // Aligned and large, after whole blocks only: what is
                // gathered goes first, then the whole blocks of `data`
                // straight from the caller's buffer.
                self.flush(file)?;
                let n = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
                self.out.write_all(file, &data[..n])?;
                data = &data[n..];
                continue;
            }
            let n = self.buf.fill(data);
            data = &data[n..];
            if self.buf.room() == 0 {
                self.out.write_all(file, self.buf.data())?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Write what is gathered.
    pub fn flush(&mut self, file: &File) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(file, self.buf.data())?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Bytes written with `O_DIRECT` so far.
    pub fn direct_bytes(&self) -> u64 {
        self.out.direct_bytes()
    }
}

/// Writes a new file sequentially from its start: the aligned part of
/// each large, aligned piece with `O_DIRECT`, everything else through the
/// page cache with its writeback started early ([`Writeback`]). The caller
/// still fsyncs the file at the end (for its size and extents, and for
/// what went through the page cache).
pub struct Direct {
    /// Pieces whose whole blocks come to fewer bytes than this go through
    /// the page cache.
    min: usize,
    written: u64,
    /// Bytes written with `O_DIRECT`.
    direct_bytes: u64,
    /// `O_DIRECT` is set on the file now.
    on: bool,
    /// The file system refused `O_DIRECT`: never try again.
    refused: bool,
    writeback: Writeback,
}

impl Default for Direct {
    /// Direct writes for pieces of at least 256 KiB: for files that are
    /// written in large pieces and whose writer does not wait for each.
    fn default() -> Self {
        Direct::with_min(DIRECT_MIN)
    }
}

impl Direct {
    /// Direct writes for the whole blocks of every aligned piece, however
    /// small: for a file that is fsynced as soon as it is written (the
    /// writer waits for the disk either way, and the page cache would only
    /// add a copy of every byte and the work of writing it back).
    pub fn eager() -> Direct {
        Direct::with_min(DIRECT_ALIGN)
    }

    fn with_min(min: usize) -> Direct {
        Direct {
            min,
            written: 0,
            direct_bytes: 0,
            on: false,
            refused: false,
            writeback: Writeback::default(),
        }
    }

    /// Append all of `data` to `file`.
    pub fn write_all(&mut self, file: &File, data: &[u8]) -> io::Result<()> {
        let aligned = self.written.is_multiple_of(DIRECT_ALIGN as u64)
            && (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
        let whole = if aligned && !self.refused {
            data.len() / DIRECT_ALIGN * DIRECT_ALIGN
        } else {
            0
        };
        let mut rest = data;
        if whole >= self.min && self.direct(file, true)? {
            let n = self.write_direct(file, &mut [io::IoSlice::new(&data[..whole])])?;
            rest = &data[n..];
        }
        if !rest.is_empty() {
            self.direct(file, false)?;
            (&*file).write_all(rest)?;
            self.written += rest.len() as u64;
            self.writeback.wrote(file, rest.len());
        }
        Ok(())
    }

    /// Bytes written with `O_DIRECT` so far.
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes
    }

    /// Append `first` then `second`: in one direct write (`writev`) when
    /// both can go direct together (`first` whole blocks, both at aligned
    /// addresses, the file at a block boundary, enough bytes), otherwise
    /// one after the other as [`Direct::write_all`] would.
    pub fn write_pair(&mut self, file: &File, first: &[u8], second: &[u8]) -> io::Result<()> {
        let aligned = |b: &[u8]| (b.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
        let whole = second.len() / DIRECT_ALIGN * DIRECT_ALIGN;
        let together = !self.refused
            && self.written.is_multiple_of(DIRECT_ALIGN as u64)
            && first.len().is_multiple_of(DIRECT_ALIGN)
            && aligned(first)
            && aligned(second)
            && first.len() + whole >= self.min;
        if !together || !self.direct(file, true)? {
            self.write_all(file, first)?;
            return self.write_all(file, second);
        }
        let done = self.write_direct(
            file,
            &mut [io::IoSlice::new(first), io::IoSlice::new(&second[..whole])],
        )?;
        // What is left: after a short write or a refusal, and the tail of
        // `second` after its whole blocks.
        let both = first.len() + second.len();
        let (a, b) = if done < first.len() {
            (&first[done..], second)
        } else {
            (&[][..], &second[done - first.len()..])
        };
        debug_assert_eq!(done + a.len() + b.len(), both);
        for rest in [a, b] {
            if !rest.is_empty() {
                self.write_all(file, rest)?;
            }
        }
        Ok(())
    }

    /// Write `slices` in turn with `O_DIRECT` set; returns how much was
    /// written (less when the file system turned out to refuse direct
    /// writes, or after a short write).
    fn write_direct(&mut self, file: &File, slices: &mut [io::IoSlice]) -> io::Result<usize> {
        let mut left = slices;
        let mut done = 0;
        while !left.is_empty() {
            match (&*file).write_vectored(left) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    self.written += n as u64;
                    self.direct_bytes += n as u64;
                    self.writeback.wrote(file, n);
                    io::IoSlice::advance_slices(&mut left, n);
                    if !n.is_multiple_of(DIRECT_ALIGN) {
                        // A short write (a full disk): the rest goes
                        // through the page cache, where the error shows.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(EINVAL) && done == 0 => {
                    self.refused = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Set or clear `O_DIRECT`; whether it is set now.
    #[cfg(target_os = "linux")]
    fn direct(&mut self, file: &File, on: bool) -> io::Result<bool> {
        use rustix::fs::OFlags;
        if self.on == on {
            return Ok(on);
        }
        let flags = rustix::fs::fcntl_getfl(file)?;
        let flags = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        match rustix::fs::fcntl_setfl(file, flags) {
            Ok(()) => self.on = on,
            // Refused by the file system: stay on the page cache.
            Err(_) if on => self.refused = true,
            Err(e) => return Err(e.into()),
        }
        Ok(self.on)
    }

    #[cfg(not(target_os = "linux"))]
    fn direct(&mut self, _file: &File, _on: bool) -> io::Result<bool> {
        self.refused = true;
        Ok(false)
    }
}

/// `EINVAL`: what a write with `O_DIRECT` returns where the file system
/// does not support it.
const EINVAL: i32 = 22;

/// Bytes per buffer handed to the writing thread.
const BUFFER: usize = 1 << 20;
/// Buffers one [`WriteBehind`] uses at most: one being filled, two
/// waiting, one being written.
const BUFFERS: usize = 4;

/// What the writing thread writes next: a buffer of its own (given back
/// once written), or bytes lent by the caller (dropped once written).
enum Job {
    Own(AlignedBuf),
    Lent(Box<dyn AsRef<[u8]> + Send>, std::ops::Range<usize>),
}

/// A new file written by a thread of its own: the caller fills 1 MiB
/// buffers ([`WriteBehind::space`] to read straight into one, or
/// [`Write::write`] to copy) and full buffers are handed over, so that
/// the caller goes on decrypting and hashing while the kernel copies and
/// the disk writes. [`WriteBehind::put`] takes bytes the caller already
/// has in memory and writes their aligned part straight from there. [`WriteBehind::finish`] writes the rest, fsyncs and
/// returns the first error; dropped unfinished, it stops the thread
/// without an fsync (the caller deletes the file).
pub struct WriteBehind {
    /// The buffer being filled.
    buf: AlignedBuf,
    /// Bytes per buffer.
    size: usize,
    /// Bytes handed over to the thread so far (the file offset of the
    /// buffer's first byte).
    handed: u64,
    jobs: Option<mpsc::SyncSender<Job>>,
    free: mpsc::Receiver<AlignedBuf>,
    made: usize,
    abandon: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl WriteBehind {
    /// Start writing `file` (new and empty) on its own thread; `expected`
    /// bytes (a hint: buffers are no larger than needed for them).
    pub fn new(file: File, expected: u64) -> io::Result<WriteBehind> {
        let size = buffer_for(expected, BUFFER);
        let (jobs, rx) = mpsc::sync_channel::<Job>(BUFFERS - 2);
        let (free_tx, free) = mpsc::sync_channel::<AlignedBuf>(BUFFERS);
        let abandon = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&abandon);
        let thread = std::thread::Builder::new()
            .name("renkei-write".into())
            .spawn(move || {
                let mut out = Direct::default();
                // Never blocks: the channel holds every buffer there is.
                let give_back = |mut buf: AlignedBuf| {
                    buf.clear();
                    let _ = free_tx.send(buf);
                };
                // A few whole blocks of our own (the block where two lent
                // pieces meet), kept to go out in one direct write with
                // the lent piece that follows them.
                let mut joint: Option<AlignedBuf> = None;
                for job in rx {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    if let Some(buf) = joint.take() {
                        match &job {
                            Job::Lent(bytes, range) => {
                                out.write_pair(
                                    &file,
                                    buf.data(),
                                    &(**bytes).as_ref()[range.clone()],
                                )?;
                                give_back(buf);
                                continue;
                            }
                            Job::Own(_) => {
                                out.write_all(&file, buf.data())?;
                                give_back(buf);
                            }
                        }
                    }
                    match job {
                        Job::Own(buf)
                            if buf.len() < DIRECT_MIN
                                && buf.len().is_multiple_of(DIRECT_ALIGN)
                                && !buf.is_empty() =>
                        {
                            joint = Some(buf);
                        }
                        Job::Own(buf) => {
                            out.write_all(&file, buf.data())?;
                            give_back(buf);
                        }
                        Job::Lent(bytes, range) => {
                            out.write_all(&file, &(*bytes).as_ref()[range])?;
                        }
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if let Some(buf) = joint.take() {
                    out.write_all(&file, buf.data())?;
                }
                file.sync_all()
            })?;
        Ok(WriteBehind {
            buf: AlignedBuf::new(size),
            size,
            handed: 0,
            jobs: Some(jobs),
            free,
            made: 1,
            abandon,
            thread: Some(thread),
        })
    }

    /// The thread's error, once it stopped early.
    fn failure(&mut self) -> io::Error {
        self.jobs = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the file writing thread stopped"),
        }
    }

    fn hand_over(&mut self) -> io::Result<()> {
        let next = if self.made < BUFFERS {
            self.made += 1;
            AlignedBuf::new(self.size)
        } else {
            match self.free.recv() {
                Ok(b) => b,
                Err(_) => return Err(self.failure()),
            }
        };
        let full = std::mem::replace(&mut self.buf, next);
        self.handed += full.len() as u64;
        self.send(Job::Own(full))
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.failure())
        }
    }

    /// Append `bytes`, which the caller has in memory already: the whole
    /// blocks of a large piece at an aligned address that continues the
    /// file at a block boundary are written from `bytes` itself (dropped
    /// once written); the rest is copied into the buffer.
    pub fn put<B: AsRef<[u8]> + Send + 'static>(&mut self, bytes: B) -> io::Result<()> {
        let data = bytes.as_ref();
        let offset = self.handed + self.buf.len() as u64;
        let head = ((DIRECT_ALIGN - (offset % DIRECT_ALIGN as u64) as usize) % DIRECT_ALIGN)
            .min(data.len());
        let whole = (data.len() - head) / DIRECT_ALIGN * DIRECT_ALIGN;
        let aligned = (data[head..].as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
        if whole < DIRECT_MIN || !aligned {
            return self.write_all(data);
        }
        let end = head + whole;
        let mut tail = [0u8; DIRECT_ALIGN];
        let tail_len = data.len() - end;
        tail[..tail_len].copy_from_slice(&data[end..]);
        self.write_all(&data[..head])?;
        if !self.buf.is_empty() {
            self.hand_over()?;
        }
        self.handed += whole as u64;
        self.send(Job::Lent(Box::new(bytes), head..end))?;
        self.write_all(&tail[..tail_len])
    }

    /// Room to read into (never empty); say how much was put there with
    /// [`WriteBehind::advance`]. An error is the writing thread's.
    pub fn space(&mut self) -> io::Result<&mut [u8]> {
        if self.buf.room() == 0 {
            self.hand_over()?;
        }
        Ok(self.buf.space())
    }

    /// `n` bytes were put at the start of [`WriteBehind::space`].
    pub fn advance(&mut self, n: usize) {
        self.buf.advance(n);
    }

    /// Write what is buffered, wait for the thread, fsync the file.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.hand_over()?;
        }
        self.jobs = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("the file writing thread stopped")),
        }
    }
}

impl Write for WriteBehind {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.space()?;
        let n = data.len().min(room.len());
        room[..n].copy_from_slice(&data[..n]);
        self.advance(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.abandon.store(true, Ordering::Relaxed);
            self.jobs = None;
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn what_is_written_behind_arrives_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(BUFFERS * BUFFER * 3 + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut w = WriteBehind::new(File::create(&path).unwrap(), data.len() as u64).unwrap();
        // Copied in, and read straight into the buffer, in turn.
        for (i, mut piece) in data.chunks(65_000).enumerate() {
            if i % 2 == 0 {
                w.write_all(piece).unwrap();
            } else {
                while !piece.is_empty() {
                    let n = piece.read(w.space().unwrap()).unwrap();
                    w.advance(n);
                }
            }
        }
        w.finish().unwrap();
        let mut got = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut got).unwrap();
        assert!(got == data);
    }

    /// Bytes at `range` of an aligned buffer, lent to [`WriteBehind::put`].
    struct Held(Arc<AlignedBuf>, std::ops::Range<usize>);

    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.0.data()[self.1.clone()]
        }
    }

    #[test]
    fn lent_pieces_arrive_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut source = AlignedBuf::new(8 << 20);
        let n = source.space().len();
        for (i, b) in source.space().iter_mut().enumerate() {
            *b = (i * 13 % 251) as u8;
        }
        source.advance(n);
        let source = Arc::new(source);
        // Pieces starting on and off block boundaries, in memory and in
        // the file, small and large, and a copied write between them.
        let cuts = [
            0,
            1000,
            4096,
            4096 + 300 * 1024,
            1 << 20,
            (1 << 20) + 5,
            (3 << 20) + 5,
            (3 << 20) + 4096,
            (5 << 20) + 4096 + 17,
            8 << 20,
        ];
        let mut w = WriteBehind::new(File::create(&path).unwrap(), 8 << 20).unwrap();
        for (k, c) in cuts.windows(2).enumerate() {
            if k == 4 {
                w.write_all(&source.data()[c[0]..c[1]]).unwrap();
            } else {
                w.put(Held(Arc::clone(&source), c[0]..c[1])).unwrap();
            }
        }
        w.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == source.data());
        // The writing thread dropped every piece it was lent.
        assert_eq!(Arc::strong_count(&source), 1);
    }

    /// Whether files under `dir` take direct writes (Linux, not tmpfs).
    fn direct_here(dir: &std::path::Path) -> bool {
        #[cfg(target_os = "linux")]
        {
            const TMPFS_MAGIC: i64 = 0x0102_1994;
            rustix::fs::statfs(dir).unwrap().f_type as i64 != TMPFS_MAGIC
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = dir;
            false
        }
    }

    #[test]
    fn pairs_go_out_in_one_direct_write_and_arrive_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut w = Direct::default();
        let mut joint = AlignedBuf::new(DIRECT_ALIGN);
        let mut lent = AlignedBuf::new(1 << 20);
        let mut want = Vec::new();
        // A block of ours then a lent megabyte, at block boundaries (one
        // direct write each); then a pair that cannot go together (the
        // first part not whole blocks), then a pair again.
        for (k, first) in [DIRECT_ALIGN, DIRECT_ALIGN, 100, DIRECT_ALIGN]
            .iter()
            .enumerate()
        {
            joint.clear();
            lent.clear();
            let a: Vec<u8> = (0..*first).map(|i| (i * 7 + k) as u8).collect();
            let b: Vec<u8> = (0..(1 << 20) - (k % 3) * DIRECT_ALIGN)
                .map(|i| (i * 13 + k) as u8)
                .collect();
            joint.fill(&a);
            lent.fill(&b);
            let before = w.direct_bytes();
            w.write_pair(&file, joint.data(), lent.data()).unwrap();
            want.extend_from_slice(&a);
            want.extend_from_slice(&b);
            if k < 2 && direct_here(dir.path()) {
                assert_eq!(w.direct_bytes() - before, (a.len() + b.len()) as u64);
            }
        }
        file.sync_all().unwrap();
        assert!(std::fs::read(&path).unwrap() == want);
    }

    #[test]
    fn an_eager_writer_writes_small_pieces_direct_and_a_default_one_does_not() {
        // What a 64 KiB upload is: 16 whole blocks and a tail.
        let data: Vec<u8> = (0..(64 << 10) + 1234u32).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        for (name, mut w, direct) in [
            ("eager", Direct::eager(), 64u64 << 10),
            ("default", Direct::default(), 0),
        ] {
            let path = dir.path().join(name);
            let file = File::create(&path).unwrap();
            let mut buf = AlignedBuf::new(1 << 20);
            buf.fill(&data);
            w.write_all(&file, buf.data()).unwrap();
            file.sync_all().unwrap();
            assert!(std::fs::read(&path).unwrap() == data, "{name}");
            if direct_here(dir.path()) {
                assert_eq!(w.direct_bytes(), direct, "{name}");
            }
        }
    }

    #[test]
    fn direct_writes_arrive_whole_and_in_order() {
        let data: Vec<u8> = (0..(5 << 20) + 4321u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        // The temporary folder (a disk file system, direct writes), and
        // tmpfs where there is one (which may refuse them: the page cache
        // then takes everything).
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
            dirs.push(shm);
        }
        for dir in &dirs {
            let path = dir.path().join("f");
            let file = File::create(&path).unwrap();
            let mut w = Direct::default();
            let mut buf = AlignedBuf::new(1 << 20);
            // Whole aligned megabytes, then small and unaligned pieces,
            // then aligned megabytes again at an unaligned offset, then
            // a tail.
            let (mut at, mut piece) = (0, 0);
            while at < data.len() {
                let want = match piece % 5 {
                    0 | 1 | 4 => 1 << 20,
                    2 => 333,
                    _ => 70_000,
                };
                piece += 1;
                let n = buf.fill(&data[at..(at + want).min(data.len())]);
                w.write_all(&file, buf.data()).unwrap();
                buf.clear();
                at += n;
            }
            file.sync_all().unwrap();
            assert!(std::fs::read(&path).unwrap() == data);
            if direct_here(dir.path()) {
                assert!(w.direct_bytes() >= 2 << 20, "{}", w.direct_bytes());
            }
        }
    }

    #[test]
    fn pieces_of_any_size_and_alignment_arrive_whole_and_in_order() {
        let data: Vec<u8> = (0..(6 << 20) + 999u32)
            .map(|i| (i.wrapping_mul(2_246_822_519) >> 9) as u8)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut w = Pieces::default();
        // A header of odd length first (as a sealed package has), then
        // pieces from 1 byte to 3 MiB at every alignment.
        let sizes = [317, 1, 4096, 3 << 20, 65_536 + 16, 1 << 20, 12_345];
        let (mut at, mut i) = (0, 0);
        while at < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - at);
            w.write_all(&file, &data[at..at + n]).unwrap();
            at += n;
            i += 1;
        }
        w.flush(&file).unwrap();
        file.sync_all().unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
        #[cfg(target_os = "linux")]
        {
            const TMPFS_MAGIC: i64 = 0x0102_1994;
            if rustix::fs::statfs(dir.path()).unwrap().f_type as i64 != TMPFS_MAGIC {
                assert!(w.direct_bytes() >= 4 << 20, "{}", w.direct_bytes());
            }
        }
    }

    #[test]
    fn buffers_are_sized_for_what_they_will_hold() {
        assert_eq!(buffer_for(0, 1 << 20), DIRECT_ALIGN);
        assert_eq!(buffer_for(1, 1 << 20), DIRECT_ALIGN);
        assert_eq!(buffer_for(65_536, 1 << 20), 65_536);
        assert_eq!(buffer_for(65_537, 1 << 20), 65_536 + DIRECT_ALIGN);
        assert_eq!(buffer_for(u64::MAX, 1 << 20), 1 << 20);
    }

    #[test]
    fn aligned_buffers_are_aligned_and_bounded() {
        for cap in [4096, 1 << 20] {
            let mut b = AlignedBuf::new(cap);
            assert_eq!(b.data().as_ptr() as usize % DIRECT_ALIGN, 0);
            assert_eq!(b.space().len(), cap);
            b.space()[..3].copy_from_slice(b"abc");
            b.advance(3);
            assert_eq!(b.data(), b"abc");
            b.clear();
            assert_eq!(b.fill(&vec![7; cap + 10]), cap);
            assert_eq!((b.len(), b.room()), (cap, 0));
            assert_eq!(b.fill(b"x"), 0);
            assert_eq!(b.data().as_ptr() as usize % DIRECT_ALIGN, 0);
            b.clear();
            assert!(b.is_empty());
        }
    }

    #[test]
    fn a_write_error_is_reported_not_lost() {
        // /dev/full fails every write with ENOSPC: the error reaches the
        // caller, at a later write or at finish.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let mut w = WriteBehind::new(full, u64::MAX).unwrap();
        let chunk = vec![1u8; 100_000];
        let mut failed = None;
        for _ in 0..100 {
            if let Err(e) = w.write_all(&chunk) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => w.finish().unwrap_err(),
        };
        assert_eq!(e.raw_os_error(), Some(28), "{e}");
    }
}
