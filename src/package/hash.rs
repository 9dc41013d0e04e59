//! A reader that hashes and counts what passes through it.

use std::io::{self, Read};

use ring::digest::{Context, SHA256};

/// Hashes and counts bytes read.
pub(crate) struct HashingReader<R> {
    inner: R,
    ctx: Context,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            ctx: Context::new(&SHA256),
            count: 0,
        }
    }

    /// Bytes read so far and the SHA-256 of them.
    pub(crate) fn finish(self) -> (u64, [u8; 32]) {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.ctx.finish().as_ref());
        (self.count, out)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}
