//! PostgreSQL's binary COPY format, for the few column types the audit tables use: the cheapest
//! way to load rows (no SQL to parse per row, no text conversion of floats or arrays). A
//! [`CopyStream`] sends the rows in chunks as they are encoded, so PostgreSQL stores one chunk
//! while the next is encoded.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::PgCopyIn;
use sqlx::PgConnection;

use crate::sinks::SinkError;

/// Encoded bytes sent as one chunk of a [`CopyStream`].
const CHUNK_BYTES: usize = 64 * 1024;

/// Element type ids of the arrays written (pg_type.oid).
const INT2_OID: i32 = 21;
const FLOAT8_OID: i32 = 701;

/// A COPY ... FROM STDIN (FORMAT binary) payload being built.
pub struct CopyBuffer {
    bytes: Vec<u8>,
}

impl CopyBuffer {
    /// The header; `capacity` is a size hint in bytes.
    pub fn new(capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity + 32);
        bytes.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        bytes.extend_from_slice(&0i32.to_be_bytes());
        bytes.extend_from_slice(&0i32.to_be_bytes());
        Self { bytes }
    }

    /// Starts a row of `fields` columns.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.bytes.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn field(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(&(data.len() as i32).to_be_bytes());
        self.bytes.extend_from_slice(data);
        self
    }

    #[cfg(test)]
    pub fn null(&mut self) -> &mut Self {
        self.bytes.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    pub fn int2(&mut self, value: i16) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    pub fn int4(&mut self, value: i32) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    pub fn int8(&mut self, value: i64) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    pub fn float8(&mut self, value: f64) -> &mut Self {
        self.field(&value.to_bits().to_be_bytes())
    }

    pub fn text(&mut self, value: &str) -> &mut Self {
        self.field(value.as_bytes())
    }

    pub fn bytea(&mut self, value: &[u8]) -> &mut Self {
        self.field(value)
    }

    /// A `timestamptz`: microseconds since 2000-01-01 UTC.
    pub fn timestamptz(&mut self, value: DateTime<Utc>) -> &mut Self {
        self.int8(value.timestamp_micros() - postgres_epoch_micros())
    }

    pub fn float8_array(&mut self, values: &[f64]) -> &mut Self {
        self.array(FLOAT8_OID, 8, values.iter().map(|value| value.to_bits().to_be_bytes()))
    }

    pub fn int2_array(&mut self, values: &[i16]) -> &mut Self {
        self.array(INT2_OID, 2, values.iter().map(|value| value.to_be_bytes()))
    }

    /// A one-dimensional array without NULLs (an empty one has no dimensions).
    fn array<const N: usize>(
        &mut self,
        oid: i32,
        width: i32,
        values: impl ExactSizeIterator<Item = [u8; N]>,
    ) -> &mut Self {
        let count = values.len() as i32;
        let header = if count == 0 { 12 } else { 20 };
        self.bytes.extend_from_slice(&(header + count * (4 + width)).to_be_bytes());
        self.bytes.extend_from_slice(&i32::from(count > 0).to_be_bytes());
        self.bytes.extend_from_slice(&0i32.to_be_bytes());
        self.bytes.extend_from_slice(&oid.to_be_bytes());
        if count > 0 {
            self.bytes.extend_from_slice(&count.to_be_bytes());
            self.bytes.extend_from_slice(&1i32.to_be_bytes());
        }
        for value in values {
            self.bytes.extend_from_slice(&width.to_be_bytes());
            self.bytes.extend_from_slice(&value);
        }
        self
    }

    /// The payload with its trailer.
    #[cfg(test)]
    pub fn finish(mut self) -> Vec<u8> {
        self.end();
        self.bytes
    }

    fn end(&mut self) {
        self.bytes.extend_from_slice(&(-1i16).to_be_bytes());
    }
}

/// A `COPY ... FROM STDIN (FORMAT binary)` in progress on a connection.
pub struct CopyStream<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
    buffer: CopyBuffer,
}

impl<'c> CopyStream<'c> {
    /// Starts `statement` (PostgreSQL answers before the first row is sent).
    pub async fn start(connection: &'c mut PgConnection, statement: &str) -> Result<Self, SinkError> {
        let copy = connection.copy_in_raw(statement).await?;
        Ok(Self { copy, buffer: CopyBuffer::new(CHUNK_BYTES) })
    }

    /// The buffer the next row is encoded into.
    pub fn rows(&mut self) -> &mut CopyBuffer {
        &mut self.buffer
    }

    /// Sends what is encoded once it fills a chunk.
    pub async fn send_full(&mut self) -> Result<(), SinkError> {
        if self.buffer.bytes.len() >= CHUNK_BYTES {
            self.copy.send(&self.buffer.bytes[..]).await?;
            self.buffer.bytes.clear();
        }
        Ok(())
    }

    /// Sends the rest with the trailer and waits for PostgreSQL to store every row.
    pub async fn finish(mut self) -> Result<(), SinkError> {
        self.buffer.end();
        self.copy.send(&self.buffer.bytes[..]).await?;
        self.copy.finish().await?;
        Ok(())
    }
}

fn postgres_epoch_micros() -> i64 {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().map_or(946_684_800_000_000, |epoch| epoch.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header, one row of each kind of field, and trailer, byte for byte.
    #[test]
    fn encodes_the_binary_format() {
        let mut buffer = CopyBuffer::new(0);
        let at = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap();
        buffer.row(5).int2(1).float8(1.5).text("ab").timestamptz(at).float8_array(&[2.0]);
        buffer.row(2).null().int2_array(&[]);
        let bytes = buffer.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 5, 0, 0, 0, 2, 0, 1]);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend_from_slice(&1_000_000i64.to_be_bytes());
        expected.extend_from_slice(&[
            0, 0, 0, 32, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 189, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 8,
        ]);
        expected.extend_from_slice(&2.0f64.to_bits().to_be_bytes());
        expected.extend_from_slice(&[0, 2, 255, 255, 255, 255, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 21]);
        expected.extend_from_slice(&[255, 255]);
        assert_eq!(bytes, expected);
    }
}
