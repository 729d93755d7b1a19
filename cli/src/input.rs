//! Opening the CLI's inputs and feeding them to the core: S3-style objects (plain or gzip)
//! are streamed through the core's decoder, Parquet objects are read a row group at a
//! time into the same decoder, and CloudWatch Logs payload JSON is decoded whole.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use bytes::Bytes;
use rejectwatch_core::decode::{
    DecodeError, DecodeLimits, ObjectDecoder, ObjectLines, RecordSink, SubscriptionEvent,
    is_parquet_key, parse_log_data, starts_as_parquet,
};
use rejectwatch_core::flow_log::{FlowFormat, RecordParser};
use rejectwatch_core::parquet_object::{Columns, read_parquet};

use crate::CliError;

/// A record sink that is told which input it is reading and can ask to stop early.
pub trait InputAware: RecordSink {
    /// Names the input (file, payload) that the next records come from.
    fn set_source(&mut self, name: String);
    /// Whether reading should stop (the output went away).
    fn should_stop(&self) -> bool {
        false
    }
}

/// One input: a file, or standard input (no files, or `-`).
pub enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    pub fn name(&self) -> String {
        match self {
            Source::Stdin => "<stdin>".to_owned(),
            Source::File(path) => path.display().to_string(),
        }
    }

    /// Whether the file is named as a Parquet flow-log object (`....log.parquet`).
    fn is_parquet_name(&self) -> bool {
        match self {
            Source::Stdin => false,
            Source::File(path) => is_parquet_key(&path.to_string_lossy()),
        }
    }

    fn open(&self) -> io::Result<Box<dyn Read>> {
        Ok(match self {
            Source::Stdin => Box::new(io::stdin().lock()),
            Source::File(path) => Box::new(File::open(path)?),
        })
    }
}

/// The inputs named on the command line, or standard input.
pub fn sources(files: &[PathBuf]) -> Vec<Source> {
    if files.is_empty() {
        return vec![Source::Stdin];
    }
    files
        .iter()
        .map(|path| {
            if path.as_os_str() == "-" {
                Source::Stdin
            } else {
                Source::File(path.clone())
            }
        })
        .collect()
}

const CHUNK_BYTES: usize = 256 << 10;

/// Reads one input into `records`. Input starting with `{` is CloudWatch Logs
/// subscription event JSON (one payload, or several separated by newlines); anything else
/// is an S3-style object, plain or gzip, whose header line (if any) sets the format.
///
/// Parquet is told by name (`.parquet`) or by its magic bytes, and only `columns` are
/// read from it; a Parquet file is never read as text.
pub fn read_records<R: InputAware>(
    source: Source,
    format: &FlowFormat,
    columns: Columns,
    records: &mut R,
) -> Result<(), CliError> {
    let name = source.name();
    let read_error = |error| CliError::Read {
        path: name.clone(),
        source: error,
    };
    let mut reader = source.open().map_err(read_error)?;
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let first = if source.is_parquet_name() {
        0
    } else {
        read_some(&mut reader, &mut chunk).map_err(read_error)?
    };
    if source.is_parquet_name() || starts_as_parquet(&chunk[..first]) {
        records.set_source(name.clone());
        let lines = ObjectLines::new(format.clone(), &mut *records);
        let mut decoder = ObjectDecoder::new(lines, DecodeLimits::default());
        let decode_error = |error| CliError::Decode {
            path: name.clone(),
            source: error,
        };
        let feed = |text: &[u8]| decoder.write(text);
        match &source {
            // A file is read as Parquet is meant to be: footer, then the chunks it needs.
            Source::File(path) if std::fs::metadata(path).is_ok_and(|meta| meta.is_file()) => {
                let file = File::open(path).map_err(read_error)?;
                read_parquet(file, columns, feed)
            }
            // Standard input, a pipe (`<(aws s3 cp ... -)`): no seeking, so held whole.
            _ => {
                let mut bytes = chunk[..first].to_vec();
                reader.read_to_end(&mut bytes).map_err(read_error)?;
                read_parquet(Bytes::from(bytes), columns, feed)
            }
        }
        .map_err(decode_error)?;
        decoder.finish().map_err(decode_error)?;
        return Ok(());
    }
    let starts_with_brace = chunk[..first]
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        == Some(&b'{');
    if starts_with_brace {
        let mut json = chunk[..first].to_vec();
        reader.read_to_end(&mut json).map_err(read_error)?;
        return read_subscription_events(&name, &json, format, records);
    }

    let decode_error = |error| CliError::Decode {
        path: name.clone(),
        source: error,
    };
    records.set_source(name.clone());
    let lines = ObjectLines::new(format.clone(), &mut *records);
    let mut decoder = ObjectDecoder::new(lines, DecodeLimits::default());
    let mut filled = first;
    while filled > 0 {
        decoder.write(&chunk[..filled]).map_err(decode_error)?;
        if decoder
            .sink()
            .is_some_and(|lines| lines.records().should_stop())
        {
            return Ok(());
        }
        filled = read_some(&mut reader, &mut chunk).map_err(read_error)?;
    }
    decoder.finish().map_err(decode_error)?;
    Ok(())
}

fn read_subscription_events<R: InputAware>(
    name: &str,
    json: &[u8],
    format: &FlowFormat,
    records: &mut R,
) -> Result<(), CliError> {
    let mut parser = RecordParser::new(format.clone());
    let payloads = serde_json::Deserializer::from_slice(json).into_iter::<SubscriptionEvent>();
    for (index, payload) in payloads.enumerate() {
        let payload_name = format!("{name} payload {}", index + 1);
        let decode_error = |error| CliError::Decode {
            path: payload_name.clone(),
            source: error,
        };
        let payload = payload
            .map_err(DecodeError::SubscriptionEvent)
            .map_err(decode_error)?;
        let data = payload.decode().map_err(decode_error)?;
        records.set_source(payload_name.clone());
        parse_log_data(&data, &mut parser, records).map_err(decode_error)?;
        if records.should_stop() {
            break;
        }
    }
    Ok(())
}

/// Reads until `buffer` is full or the input ends; returns the bytes read (0 at the end).
fn read_some(reader: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}
