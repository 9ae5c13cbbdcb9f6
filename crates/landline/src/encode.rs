//! The encoder stage: JSON Lines text gathered into chunks for the compressor.
//!
//! Records are written as lines by [`crate::transform::RecordWriter`] straight into the
//! encoder's current chunk; once a chunk holds `chunk_bytes` it goes to the compressor thread
//! and a recycled buffer takes its place. So a page is never held twice: its body is borrowed
//! while its lines stream out in chunks.
//!
//! With [`ObjectLimits`], the encoder also ends objects: after a number of records, or
//! before the record that could take the object past a compressed size. It bounds that size
//! without waiting for the compressor: what the compressor has written of the object, plus
//! what it has not compressed yet as if it did not compress at all (with the formats' worst
//! case of expansion), so an object never exceeds the limit, and ends within a few chunks of
//! it.
//!
//! Memory: one chunk being filled (plus the compressor's bounded queue).

use crate::compress::{CompressError, CompressStats, Compressor};

/// Where objects end: after `records` records, and before a record that could take the
/// object past `bytes` compressed bytes. An object always holds at least one record, so a
/// record that alone is larger makes an object of its own, larger than `bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectLimits {
    /// The most records in an object.
    pub records: Option<u64>,
    /// The most compressed bytes in an object.
    pub bytes: Option<u64>,
}

impl ObjectLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.records.is_some() || self.bytes.is_some()
    }
}

/// The most a compressor can add to `n` uncompressed bytes, headers and trailers included:
/// above deflate's stored blocks (5 bytes per 64 KiB, and a sync flush per block) and zstd's
/// bound (`n + n/256 + 64` per frame), for blocks of 256 KiB or more.
fn worst_case(n: u64) -> u64 {
    n + n / 64 + 1024
}

/// Where an entry of a record's line is in [`LineOutput::buf`]: its key's start and end,
/// and its value's end (the value starts after the key's colon).
pub type Span = (usize, usize, usize);

/// Why a record's line could not be taken.
#[derive(Debug)]
pub enum LineError {
    /// The compressor stopped.
    Output(CompressError),
    /// The record itself cannot be written there (it names no partition, for example).
    Record(crate::transform::RecordError),
}

impl From<CompressError> for LineError {
    fn from(e: CompressError) -> Self {
        LineError::Output(e)
    }
}

/// Where a record's line is written, and what happens once it is complete.
pub trait LineOutput {
    /// The buffer the next line is appended to.
    fn buf(&mut self) -> &mut Vec<u8>;
    /// Called after each complete line.
    fn end_line(&mut self) -> Result<(), CompressError>;
    /// Called after each complete record's line in place of
    /// [`end_line`](Self::end_line), with its top-level entries (`spans`, offsets into
    /// [`buf`](Self::buf)) for outputs that look into the record.
    fn end_record(&mut self, spans: &[Span]) -> Result<(), LineError> {
        let _ = spans;
        self.end_line().map_err(LineError::Output)
    }
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
    limits: ObjectLimits,
    /// Where the current line starts in the chunk.
    line_start: usize,
    /// The current object, from 1, where it starts in the uncompressed stream, and the
    /// records of each object so far (the current one's last).
    object: u64,
    object_start: u64,
    records: Vec<u64>,
    /// Where each object starts in the uncompressed stream.
    starts: Vec<u64>,
    /// The records limit was reached: the next line starts the next object.
    end_pending: bool,
    /// An error met where it could not be returned ([`LineOutput::buf`]).
    failed: Option<CompressError>,
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
            limits: ObjectLimits::default(),
            line_start: 0,
            object: 1,
            object_start: 0,
            records: vec![0],
            starts: vec![0],
            end_pending: false,
            failed: None,
        }
    }

    /// Ends objects at `limits` (see [`ObjectLimits`] and
    /// [`Compressor::send_ending_object`]).
    pub fn with_limits(mut self, limits: ObjectLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The records of each object so far, the current one's last.
    pub fn object_records(&self) -> &[u64] {
        &self.records
    }

    /// The JSON Lines bytes of each object so far, the current one's last.
    pub fn object_bytes(&self) -> Vec<u64> {
        let end = self.bytes();
        self.starts
            .iter()
            .zip(self.starts.iter().skip(1).chain(std::iter::once(&end)))
            .map(|(start, next)| next - start)
            .collect()
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

    /// Sends the chunk so far as the end of the current object; what follows begins the
    /// next.
    fn end_object(&mut self) -> Result<(), CompressError> {
        let fresh = self
            .compressor
            .buffer(self.chunk_bytes + self.chunk_bytes / 4);
        let full = std::mem::replace(&mut self.chunk, fresh);
        self.bytes += full.len() as u64;
        self.compressor.send_ending_object(full)?;
        self.object += 1;
        self.object_start = self.bytes;
        self.records.push(0);
        self.starts.push(self.bytes);
        Ok(())
    }

    /// The most compressed bytes the current object can come to with what it holds now.
    fn object_bound(&self) -> u64 {
        let figures = self.compressor.figures();
        let (done_in, done_out) = if figures.object == self.object {
            (figures.bytes_in, figures.bytes_out)
        } else {
            // The compressor has not begun this object yet.
            (0, 0)
        };
        let held = self.bytes() - self.object_start;
        done_out + worst_case(held.saturating_sub(done_in))
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
        if self.end_pending {
            self.end_pending = false;
            if let Err(e) = self.end_object() {
                self.failed = Some(e);
            }
            self.line_start = 0;
        }
        &mut self.chunk
    }

    fn end_line(&mut self) -> Result<(), CompressError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.limits.any() {
            self.limit_objects()?;
        } else if let Some(last) = self.records.last_mut() {
            *last += 1;
        }
        if self.chunk.len() >= self.chunk_bytes {
            self.ship()?;
        }
        self.line_start = self.chunk.len();
        Ok(())
    }
}

impl LineEncoder {
    /// After a line: ends the object before it when the line could take the object past
    /// its size, and after it when the object has its records.
    fn limit_objects(&mut self) -> Result<(), CompressError> {
        let mut records = self.records.last().copied().unwrap_or(0) + 1;
        if let Some(max) = self.limits.bytes
            && records > 1
            && self.object_bound() > max
        {
            // The line goes to the next object: out of the chunk, and back after the end.
            let line = self.chunk[self.line_start..].to_vec();
            self.chunk.truncate(self.line_start);
            self.end_object()?;
            self.chunk.extend_from_slice(&line);
            records = 1;
        }
        if let Some(last) = self.records.last_mut() {
            *last = records;
        }
        if self.limits.records.is_some_and(|max| records >= max) {
            self.end_pending = true;
        }
        Ok(())
    }
}
