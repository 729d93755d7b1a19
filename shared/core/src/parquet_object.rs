//! Parquet flow-log objects (`FileFormat: parquet`), read into the same decoder as text.
//!
//! AWS writes one column per field, named as the field with underscores for hyphens
//! (`account_id`, `pkt_srcaddr`), as INT_32, INT_64 or STRING. Only the documented columns
//! the caller needs are read (projection); unknown columns are ignored and a missing
//! column is an absent value, as a field missing from a text format is.
//!
//! Each row is written out as the text line it would be in a plain-text object, after a
//! header line naming the columns, and that text goes through [`ObjectDecoder`] and the
//! record parser. So a Parquet object counts exactly as its text twin does, by
//! construction: the same checks on every column read, the same malformed lines, the same
//! normalisation (millisecond times, IPv4-mapped IPv6). Columns that are not read are not
//! checked: a row whose only bad value is in one of them is counted, where its text line
//! would be malformed. The text costs less than decoding the Parquet pages themselves.
//!
//! Objects in S3 are read row group by row group with ranged reads: the footer first,
//! then the projected column chunks of one row group at a time, so memory holds one row
//! group's chunks and one batch of rows, never the object.
//!
//! [`ObjectDecoder`]: crate::decode::ObjectDecoder

use std::io;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};

use crate::decode::DecodeError;
use crate::flow_log::Field;
use crate::ports::{ByteRange, FetchError, ObjectRef, ObjectSource};
use crate::tally::RejectTally;

/// Which documented columns to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Columns {
    /// Those the REJECT tally reads, and those that tell a transit gateway flow log.
    Tally,
    /// Every documented column (`rejectwatch parse`).
    All,
}

impl Columns {
    fn wants(self, field: Field) -> bool {
        match self {
            Columns::All => true,
            Columns::Tally => {
                RejectTally::FIELDS_READ.contains(&field) || field.is_transit_gateway_only()
            }
        }
    }
}

/// Rows per record batch: a batch's arrays and its text stay well under a megabyte.
const BATCH_ROWS: usize = 4096;

/// The last bytes of an object read first: the footer of a flow-log object (a few KiB
/// per row group) usually fits, so one request gets it.
const FOOTER_PREFETCH: u64 = 64 << 10;

/// The longest footer read. A flow-log object's footer is a few KiB per row group; a
/// longer one is refused rather than held in memory.
pub const MAX_FOOTER_BYTES: u64 = 16 << 20;

/// Projected column chunks closer than this are fetched in one request.
const COALESCE_GAP: u64 = 1 << 20;

/// The most bytes of column chunks one row group may need. AWS closes objects at 75 MB,
/// so a real row group is smaller; a larger one is refused rather than held in memory.
pub const MAX_ROW_GROUP_FETCH: u64 = 128 << 20;

/// The columns to read from one object, and the header line that names them.
struct Plan {
    mask: ProjectionMask,
    /// Root column indices, in file order.
    roots: Vec<usize>,
    header: String,
}

impl Plan {
    fn new(metadata: &ArrowReaderMetadata, columns: Columns) -> Result<Plan, DecodeError> {
        let mut roots = Vec::new();
        let mut names = Vec::new();
        for (index, column) in metadata.schema().fields().iter().enumerate() {
            let Some(field) = Field::from_name(column.name()) else {
                continue;
            };
            if !columns.wants(field) {
                continue;
            }
            if !is_supported(column.data_type()) {
                return Err(DecodeError::ParquetColumnType {
                    column: column.name().clone(),
                    data_type: column.data_type().to_string(),
                });
            }
            roots.push(index);
            names.push(field.name());
        }
        if roots.is_empty() {
            return Err(DecodeError::ParquetNoFlowLogColumns);
        }
        Ok(Plan {
            mask: ProjectionMask::roots(metadata.parquet_schema(), roots.iter().copied()),
            roots,
            header: names.join(" "),
        })
    }

    /// The header line, as a text object starts.
    fn header_line(&self) -> Vec<u8> {
        let mut line = self.header.clone().into_bytes();
        line.push(b'\n');
        line
    }

    /// The byte ranges of the projected column chunks of one row group, coalesced.
    fn row_group_ranges(&self, metadata: &ParquetMetaData, row_group: usize) -> Vec<(u64, u64)> {
        let schema = metadata.file_metadata().schema_descr();
        let group = metadata.row_group(row_group);
        let mut ranges: Vec<(u64, u64)> = (0..group.num_columns())
            .filter(|&leaf| self.roots.contains(&schema.get_column_root_idx(leaf)))
            .map(|leaf| {
                let (start, length) = group.column(leaf).byte_range();
                (start, start + length)
            })
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 + COALESCE_GAP => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}

/// The arrow types AWS writes (INT_32, INT_64, STRING) and their near kin.
fn is_supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// Appends the rows of a batch to `text` as lines of space-separated values, `-` for a
/// null or an empty string (a text token is never empty). A newline or carriage return
/// inside a string becomes a space, so one row stays one line (and, having one value too
/// many, is a malformed line).
fn write_rows(batch: &RecordBatch, text: &mut Vec<u8>) {
    let columns: Vec<&ArrayRef> = batch.columns().iter().collect();
    let mut number = itoa::Buffer::new();
    for row in 0..batch.num_rows() {
        for (position, column) in columns.iter().enumerate() {
            if position > 0 {
                text.push(b' ');
            }
            if column.is_null(row) {
                text.push(b'-');
                continue;
            }
            macro_rules! integer {
                ($type:ty) => {
                    text.extend_from_slice(
                        number
                            .format(column.as_primitive::<$type>().value(row))
                            .as_bytes(),
                    )
                };
            }
            match column.data_type() {
                DataType::Int8 => integer!(Int8Type),
                DataType::Int16 => integer!(Int16Type),
                DataType::Int32 => integer!(Int32Type),
                DataType::Int64 => integer!(Int64Type),
                DataType::UInt8 => integer!(UInt8Type),
                DataType::UInt16 => integer!(UInt16Type),
                DataType::UInt32 => integer!(UInt32Type),
                DataType::UInt64 => integer!(UInt64Type),
                DataType::Utf8 => push_value(text, column.as_string::<i32>().value(row)),
                DataType::LargeUtf8 => push_value(text, column.as_string::<i64>().value(row)),
                DataType::Utf8View => push_value(text, column.as_string_view().value(row)),
                DataType::Binary => push_value(text, column.as_binary::<i32>().value(row)),
                DataType::LargeBinary => push_value(text, column.as_binary::<i64>().value(row)),
                DataType::BinaryView => push_value(text, column.as_binary_view().value(row)),
                // Refused when the plan was made.
                _ => text.push(b'-'),
            }
        }
        text.push(b'\n');
    }
}

fn push_value(text: &mut Vec<u8>, value: impl AsRef<[u8]>) {
    let value = value.as_ref();
    if value.is_empty() {
        text.push(b'-');
        return;
    }
    let start = text.len();
    text.extend_from_slice(value);
    for byte in &mut text[start..] {
        if matches!(*byte, b'\n' | b'\r') {
            *byte = b' ';
        }
    }
}

fn parquet_error(error: ParquetError) -> DecodeError {
    DecodeError::ParquetFile(Box::new(error))
}

/// Reads a whole Parquet file or buffer (the CLI's inputs) and hands its text to `feed`:
/// a header line, then the rows a batch at a time.
pub fn read_parquet<R: ChunkReader + 'static>(
    reader: R,
    columns: Columns,
    mut feed: impl FnMut(&[u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(reader).map_err(parquet_error)?;
    let metadata = ArrowReaderMetadata::try_new(builder.metadata().clone(), Default::default())
        .map_err(parquet_error)?;
    let plan = Plan::new(&metadata, columns)?;
    feed(&plan.header_line())?;
    let batches = builder
        .with_projection(plan.mask.clone())
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_error)?;
    let mut text = Vec::new();
    for batch in batches {
        let batch = batch.map_err(|error| parquet_error(error.into()))?;
        text.clear();
        write_rows(&batch, &mut text);
        feed(&text)?;
    }
    Ok(())
}

/// Why a Parquet object in S3 could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParquetObjectError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// What reading a Parquet object took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParquetReadStats {
    pub object_bytes: u64,
    pub row_groups: usize,
    /// Ranged GETs sent (footer included).
    pub requests: u64,
    /// Bytes those GETs returned.
    pub bytes_fetched: u64,
}

/// Reads a Parquet object through ranged reads, footer first, then one row group at a
/// time, and hands its text to `feed` as [`read_parquet`] does.
pub async fn read_parquet_object<O: ObjectSource>(
    source: &O,
    object: &ObjectRef,
    columns: Columns,
    mut feed: impl FnMut(&[u8]) -> Result<(), DecodeError>,
) -> Result<ParquetReadStats, ParquetObjectError> {
    let tail = source
        .read_range(object, ByteRange::Suffix(FOOTER_PREFETCH))
        .await?;
    let size = tail.object_size;
    let mut stats = ParquetReadStats {
        object_bytes: size,
        requests: 1,
        bytes_fetched: tail.bytes.len() as u64,
        ..ParquetReadStats::default()
    };
    let mut tail = tail.bytes;
    let metadata = loop {
        let mut reader = ParquetMetaDataReader::new();
        match reader.try_parse_sized(&tail, size) {
            Ok(()) => break reader.finish().map_err(parquet_error)?,
            // The footer is longer than the prefetch: read the rest of it before the tail.
            Err(ParquetError::NeedMoreData(needed)) if needed as u64 > MAX_FOOTER_BYTES => {
                return Err(DecodeError::ParquetFooterTooLarge {
                    bytes: needed as u64,
                    limit: MAX_FOOTER_BYTES,
                }
                .into());
            }
            Err(ParquetError::NeedMoreData(needed)) if needed as u64 > tail.len() as u64 => {
                let start = size.saturating_sub(needed as u64);
                let end = size - tail.len() as u64;
                let head = source
                    .read_range(object, ByteRange::Span { start, end })
                    .await?;
                stats.requests += 1;
                stats.bytes_fetched += head.bytes.len() as u64;
                let mut joined = Vec::with_capacity(head.bytes.len() + tail.len());
                joined.extend_from_slice(&head.bytes);
                joined.extend_from_slice(&tail);
                tail = Bytes::from(joined);
            }
            Err(error) => return Err(parquet_error(error).into()),
        }
    };
    let metadata = ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new())
        .map_err(parquet_error)?;
    let plan = Plan::new(&metadata, columns)?;
    feed(&plan.header_line())?;
    let mut text = Vec::new();
    stats.row_groups = metadata.metadata().num_row_groups();
    for row_group in 0..stats.row_groups {
        let ranges = plan.row_group_ranges(metadata.metadata(), row_group);
        let needed: u64 = ranges.iter().map(|(start, end)| end - start).sum();
        if needed > MAX_ROW_GROUP_FETCH {
            return Err(DecodeError::ParquetRowGroupTooLarge {
                row_group,
                bytes: needed,
                limit: MAX_ROW_GROUP_FETCH,
            }
            .into());
        }
        let mut chunks = FetchedRanges::new(size);
        for (start, end) in ranges {
            let range = source
                .read_range(object, ByteRange::Span { start, end })
                .await?;
            stats.requests += 1;
            stats.bytes_fetched += range.bytes.len() as u64;
            chunks.insert(start, range.bytes);
        }
        let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(chunks, metadata.clone())
            .with_row_groups(vec![row_group])
            .with_projection(plan.mask.clone())
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(parquet_error)?;
        for batch in batches {
            let batch = batch.map_err(|error| parquet_error(error.into()))?;
            text.clear();
            write_rows(&batch, &mut text);
            feed(&text)?;
        }
    }
    Ok(stats)
}

/// The parts of an object fetched so far, served to the Parquet reader as if it were the
/// whole object. A read outside them is an error, which would be a bug in the ranges.
struct FetchedRanges {
    size: u64,
    /// (start offset, bytes), sorted by start, not overlapping.
    parts: Vec<(u64, Bytes)>,
}

impl FetchedRanges {
    fn new(size: u64) -> Self {
        FetchedRanges {
            size,
            parts: Vec::new(),
        }
    }

    fn insert(&mut self, start: u64, bytes: Bytes) {
        let at = self.parts.partition_point(|(other, _)| *other < start);
        self.parts.insert(at, (start, bytes));
    }

    /// The fetched bytes from `start` to the end of the part holding it.
    fn from(&self, start: u64) -> parquet::errors::Result<Bytes> {
        let at = self.parts.partition_point(|(other, _)| *other <= start);
        at.checked_sub(1)
            .map(|index| &self.parts[index])
            .filter(|(part_start, bytes)| start < part_start + bytes.len() as u64)
            .map(|(part_start, bytes)| bytes.slice((start - part_start) as usize..))
            .ok_or_else(|| {
                ParquetError::General(format!("byte {start} of the object was not fetched"))
            })
    }
}

impl Length for FetchedRanges {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for FetchedRanges {
    type T = io::Cursor<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(io::Cursor::new(self.from(start)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let bytes = self.from(start)?;
        if bytes.len() < length {
            return Err(ParquetError::General(format!(
                "bytes {start}..{} of the object were not fetched",
                start + length as u64
            )));
        }
        Ok(bytes.slice(..length))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;

    use super::*;

    /// Columns the tally needs, and `bytes`, `packets` and `vpc-id`, which it does not.
    fn parquet_with_extra_columns() -> Bytes {
        let text = |value: &str| Arc::new(StringArray::from(vec![value])) as ArrayRef;
        let number = |value: i64| Arc::new(Int64Array::from(vec![value])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([
            ("srcaddr", text("10.0.0.1")),
            ("dstaddr", text("10.0.0.2")),
            ("dstport", number(22)),
            ("protocol", number(6)),
            ("start", number(1_714_566_000)),
            ("action", text("REJECT")),
            ("bytes", number(40)),
            ("packets", number(1)),
            ("vpc-id", text("vpc-1")),
        ])
        .unwrap();
        let mut parquet = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut parquet, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        Bytes::from(parquet)
    }

    #[test]
    fn the_tally_reads_only_its_columns() {
        let metadata = ParquetRecordBatchReaderBuilder::try_new(parquet_with_extra_columns())
            .unwrap()
            .metadata()
            .clone();
        let metadata = ArrowReaderMetadata::try_new(metadata, Default::default()).unwrap();
        let plan = Plan::new(&metadata, Columns::Tally).unwrap();
        let read: Vec<&str> = plan.header.split(' ').collect();
        assert!(read.len() < 9, "{read:?}");
        for name in read {
            assert!(
                RejectTally::FIELDS_READ.contains(&Field::from_name(name).unwrap()),
                "{name}"
            );
        }
    }
}
