//! Parquet flow-log objects against their text twins, written by the test kit's generator
//! and read through the in-memory object source (an integration test: the kit links this
//! crate as a library, so its types are the ones under test).
#![cfg(feature = "parquet")]

use std::sync::Arc;

use arrow_array::{Float64Array, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field as ArrowField, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;

use rejectwatch_core::counters::{BatchId, CounterBatch};
use rejectwatch_core::decode::{DecodeError, DecodeLimits, ObjectDecoder, ObjectLines, RecordSink};
use rejectwatch_core::flow_log::{Field, FlowFormat, FlowRecord, MalformedLine};
use rejectwatch_core::parquet_object::*;
use rejectwatch_core::ports::ObjectRef;
use rejectwatch_core::tally::{RejectTally, TallyOptions};
use rejectwatch_testkit::fakes::InMemoryObjectSource;
use rejectwatch_testkit::generate::{CUSTOM_25_FIELDS, FlowLogGenerator, GeneratorConfig};

fn generator(format: FlowFormat) -> FlowLogGenerator {
    FlowLogGenerator::new(GeneratorConfig {
        records: 12_000,
        seed: 5,
        format,
        ..GeneratorConfig::default()
    })
}

fn twins(format: FlowFormat, rows_per_group: usize) -> (Vec<u8>, Vec<u8>) {
    let mut text = Vec::new();
    generator(format.clone()).write_text(&mut text).unwrap();
    let mut parquet = Vec::new();
    generator(format)
        .write_parquet(&mut parquet, rows_per_group)
        .unwrap();
    (text, parquet)
}

fn decoder<R: RecordSink>(records: R) -> ObjectDecoder<ObjectLines<R>> {
    ObjectDecoder::new(
        ObjectLines::new(FlowFormat::default(), records),
        DecodeLimits::default(),
    )
}

fn tally() -> RejectTally {
    RejectTally::new(TallyOptions::default())
}

fn text_tally(text: &[u8]) -> RejectTally {
    let mut decoder = decoder(tally());
    decoder.write(text).unwrap();
    decoder.finish().unwrap().into_records()
}

fn parquet_tally(parquet: Vec<u8>) -> RejectTally {
    let mut decoder = decoder(tally());
    read_parquet(Bytes::from(parquet), Columns::Tally, |text| {
        decoder.write(text)
    })
    .unwrap();
    decoder.finish().unwrap().into_records()
}

/// What a counter store would receive: the comparison that matters.
fn batch(tally: &RejectTally) -> CounterBatch {
    CounterBatch::from_tally(BatchId::for_s3_object("b", "k", None, None), tally, 16)
}

#[test]
fn a_parquet_twin_tallies_exactly_as_its_text() {
    for format in [
        FlowFormat::default(),
        FlowFormat::from_fields(&CUSTOM_25_FIELDS),
    ] {
        let (text, parquet) = twins(format, 2_500);
        let (text, parquet) = (text_tally(&text), parquet_tally(parquet));
        assert_eq!(parquet.totals(), text.totals());
        assert_eq!(parquet.totals().records, 12_000);
        assert!(parquet.totals().rejects > 1_000);
        assert_eq!(batch(&parquet), batch(&text));
    }
}

/// Every record, every documented field, as text.
#[derive(Default)]
struct Records(Vec<String>, u64);

impl RecordSink for Records {
    fn record(&mut self, record: &FlowRecord<'_>) {
        let values: Vec<String> = Field::ALL
            .iter()
            .map(|&field| format!("{:?}", record.value(field)))
            .collect();
        self.0.push(values.join(" "));
    }

    fn malformed(&mut self, _: MalformedLine) {
        self.1 += 1;
    }
}

#[test]
fn every_column_reads_back_as_the_text_value() {
    let (text, parquet) = twins(FlowFormat::from_fields(&CUSTOM_25_FIELDS), 4_000);
    let mut from_text = decoder(Records::default());
    from_text.write(&text).unwrap();
    let from_text = from_text.finish().unwrap().into_records();
    let mut from_parquet = decoder(Records::default());
    read_parquet(Bytes::from(parquet), Columns::All, |text| {
        from_parquet.write(text)
    })
    .unwrap();
    let from_parquet = from_parquet.finish().unwrap().into_records();
    assert_eq!(from_parquet.0.len(), 12_000);
    assert_eq!(from_parquet.0, from_text.0);
    assert_eq!((from_parquet.1, from_text.1), (0, 0));
}

/// Tallies `parquet` as ingest does, through ranged reads of an object; with what the
/// reading took.
async fn tally_by_ranges(parquet: Vec<u8>) -> (RejectTally, ParquetReadStats) {
    let source = InMemoryObjectSource::new();
    source.put("bucket", "flows.log.parquet", parquet);
    let object = ObjectRef {
        bucket: "bucket".into(),
        key: "flows.log.parquet".into(),
        version_id: None,
        etag: None,
    };
    let mut decoder = decoder(tally());
    let stats = read_parquet_object(&source, &object, Columns::Tally, |text| decoder.write(text))
        .await
        .unwrap();
    (decoder.finish().unwrap().into_records(), stats)
}

#[tokio::test]
async fn an_object_is_read_by_ranges_a_row_group_at_a_time() {
    let (text, parquet) = twins(FlowFormat::default(), 2_000);
    let size = parquet.len();
    let (tally, stats) = tally_by_ranges(parquet).await;
    assert_eq!(batch(&tally), batch(&text_tally(&text)));
    assert_eq!(stats.row_groups, 6);
    // The footer, then one coalesced read per row group.
    assert_eq!(stats.requests, 1 + 6);
    assert_eq!(stats.object_bytes, size as u64);
}

#[tokio::test]
async fn a_footer_longer_than_the_prefetch_is_read_in_a_second_request() {
    // Many small row groups make a footer of well over 64 KiB.
    let (text, parquet) = twins(FlowFormat::default(), 20);
    let (tally, stats) = tally_by_ranges(parquet).await;
    assert_eq!(stats.row_groups, 600);
    assert_eq!(stats.requests, 2 + 600);
    assert_eq!(batch(&tally), batch(&text_tally(&text)));
}

fn parquet_of(columns: Vec<(&str, arrow_array::ArrayRef)>) -> Vec<u8> {
    let fields: Vec<ArrowField> = columns
        .iter()
        .map(|(name, array)| ArrowField::new(*name, array.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect()).unwrap();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

fn read_all(parquet: Vec<u8>) -> Result<Records, DecodeError> {
    let mut decoder = decoder(Records::default());
    read_parquet(Bytes::from(parquet), Columns::All, |text| {
        decoder.write(text)
    })?;
    Ok(decoder.finish()?.into_records())
}

#[test]
fn unknown_columns_are_ignored_and_missing_ones_are_absent() {
    let parquet = parquet_of(vec![
        (
            "srcaddr",
            Arc::new(StringArray::from(vec![Some("198.51.100.7"), None])),
        ),
        ("dstport", Arc::new(Int32Array::from(vec![Some(22), None]))),
        (
            "action",
            Arc::new(StringArray::from(vec!["REJECT", "REJECT"])),
        ),
        (
            "some_new_field",
            Arc::new(Float64Array::from(vec![1.5, 2.5])),
        ),
    ]);
    let records = read_all(parquet).unwrap();
    assert_eq!(records.0.len(), 2);
    assert_eq!(records.1, 0);
    assert!(records.0[0].contains("198.51.100.7") && records.0[0].contains("Number(22)"));
    // Nulls are `-`: absent, as in text.
    assert_eq!(records.0[1].matches("None").count(), Field::ALL.len() - 1);
}

#[test]
fn bad_values_are_malformed_lines_as_in_text() {
    let parquet = parquet_of(vec![
        (
            "srcaddr",
            Arc::new(StringArray::from(vec![
                "198.51.100.7",
                "not-an-address",
                "1.2.3.4\n5",
            ])),
        ),
        ("dstport", Arc::new(Int32Array::from(vec![22, -1, 23]))),
        (
            "action",
            Arc::new(StringArray::from(vec!["REJECT", "REJECT", "REJECT"])),
        ),
    ]);
    let records = read_all(parquet).unwrap();
    assert_eq!((records.0.len(), records.1), (1, 2));
}

#[test]
fn an_empty_string_is_an_absent_value_not_a_short_line() {
    let parquet = parquet_of(vec![
        ("srcaddr", Arc::new(StringArray::from(vec!["198.51.100.7"]))),
        ("reject_reason", Arc::new(StringArray::from(vec![""]))),
        ("action", Arc::new(StringArray::from(vec!["REJECT"]))),
    ]);
    let records = read_all(parquet).unwrap();
    assert_eq!((records.0.len(), records.1), (1, 0));
    assert_eq!(records.0[0].matches("None").count(), Field::ALL.len() - 2);
}

#[test]
fn a_documented_column_of_another_type_is_refused_by_name() {
    let parquet = parquet_of(vec![
        ("srcaddr", Arc::new(Float64Array::from(vec![1.0]))),
        ("action", Arc::new(StringArray::from(vec!["REJECT"]))),
    ]);
    let error = read_all(parquet).map(|_| ()).unwrap_err();
    assert!(
        matches!(&error, DecodeError::ParquetColumnType { column, data_type }
            if column == "srcaddr" && data_type == &DataType::Float64.to_string()),
        "{error}"
    );
}

#[test]
fn corrupt_or_truncated_parquet_is_an_error_not_a_panic() {
    let (_, parquet) = twins(FlowFormat::default(), 2_000);
    for broken in [
        parquet[..parquet.len() / 2].to_vec(),
        b"PAR1PAR1".to_vec(),
        {
            let mut flipped = parquet.clone();
            let middle = flipped.len() / 3;
            flipped[middle..middle + 64].fill(0xff);
            flipped
        },
    ] {
        let mut decoder = decoder(tally());
        let result = read_parquet(Bytes::from(broken), Columns::Tally, |text| {
            decoder.write(text)
        });
        assert!(
            matches!(result, Err(DecodeError::ParquetFile(_))),
            "{result:?}"
        );
    }
}
