//! The encoder stage: JSON Lines text gathered into chunks for the compressor.
//!
//! Records are written as lines by [`crate::transform::RecordWriter`] straight into the
//! encoder's current chunk; once a chunk holds `chunk_bytes` it goes to the compressor thread
//! and a recycled buffer takes its place. So a page is never held twice: its body is borrowed
//! while its lines stream out in chunks.
//!
//! Memory: one chunk being filled (plus the compressor's bounded queue).

use crate::compress::{CompressError, CompressStats, Compressor};

/// Where a record's line is written, and what happens once it is complete.
pub trait LineOutput {
    /// The buffer the next line is appended to.
    fn buf(&mut self) -> &mut Vec<u8>;
    /// Called after each complete line.
    fn end_line(&mut self) -> Result<(), CompressError>;
}

impl LineOutput for Vec<u8> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self
    }
    fn end_line(&mut self) -> Result<(), CompressError> {
        Ok(())
    }
}

/// Chunks JSON Lines into the compressor.
pub struct LineEncoder {
    chunk: Vec<u8>,
    chunk_bytes: usize,
    min_boundary_bytes: usize,
    compressor: Compressor,
    bytes: u64,
}

impl LineEncoder {
    /// Sends chunks of about `chunk_bytes` to `compressor`.
    pub fn new(compressor: Compressor, chunk_bytes: usize) -> Self {
        LineEncoder {
            chunk: Vec::with_capacity(chunk_bytes + chunk_bytes / 4),
            chunk_bytes,
            min_boundary_bytes: 0,
            compressor,
            bytes: 0,
        }
    }

    /// Page ends become boundaries only once the chunk holds `bytes` (see
    /// [`Compression::min_boundary_bytes`](crate::compress::Compression::min_boundary_bytes));
    /// 0, the default, makes every marked page end one.
    pub fn with_min_boundary(mut self, bytes: usize) -> Self {
        self.min_boundary_bytes = bytes;
        self
    }

    /// Uncompressed bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes + self.chunk.len() as u64
    }

    fn ship(&mut self) -> Result<(), CompressError> {
        let fresh = self
            .compressor
            .buffer(self.chunk_bytes + self.chunk_bytes / 4);
        let full = std::mem::replace(&mut self.chunk, fresh);
        self.bytes += full.len() as u64;
        self.compressor.send(full)
    }

    /// Marks the end of page `page`: with `mark`, the chunk so far goes to the compressor
    /// as a boundary a part may end at (see [`Compressor::send_marked`]), unless it holds
    /// less than the minimum ([`with_min_boundary`](Self::with_min_boundary)); otherwise
    /// nothing.
    pub fn end_page(&mut self, page: u64, mark: bool) -> Result<(), CompressError> {
        if !mark || self.chunk.len() < self.min_boundary_bytes {
            return Ok(());
        }
        let fresh = self
            .compressor
            .buffer(self.chunk_bytes + self.chunk_bytes / 4);
        let full = std::mem::replace(&mut self.chunk, fresh);
        self.bytes += full.len() as u64;
        self.compressor.send_marked(full, page)
    }

    /// Sends what is left and ends the compressed stream.
    pub fn finish(mut self) -> Result<CompressStats, CompressError> {
        if !self.chunk.is_empty() {
            self.ship()?;
        }
        self.compressor.finish()
    }
}

impl LineOutput for LineEncoder {
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.chunk
    }

    fn end_line(&mut self) -> Result<(), CompressError> {
        if self.chunk.len() >= self.chunk_bytes {
            self.ship()?;
        }
        Ok(())
    }
}
