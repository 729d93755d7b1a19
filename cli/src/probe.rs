//! `rejectwatch bench-probe` (hidden): one pass of one stage of the core over a file held
//! in memory, for counting instructions (`scripts/bench-instructions` runs it under
//! callgrind and under qemu's instruction-count plugin). Each case reads the file first, so
//! the `read` case is the baseline the others are measured against.

use std::io::{self, Write};
use std::path::Path;

use flate2::write::MultiGzDecoder;
use rejectwatch_core::decode::{DecodeLimits, ObjectDecoder, ObjectLines};
use rejectwatch_core::flow_log::FlowFormat;
use rejectwatch_core::tally::RejectTally;

use crate::CliError;

/// Bytes handed to the decoder per call, as the throughput bench and the Lambda do.
const CHUNK_BYTES: usize = 256 << 10;

/// What one probe run does after reading the file.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Case {
    /// Nothing: the baseline (process start, reading the file).
    Read,
    /// Inflating alone, with the decoder and chunking the pipeline uses.
    Gunzip,
    /// Inflating, indexing, parsing and tallying: the core end to end.
    Tally,
}

pub fn run(case: Case, path: &Path) -> Result<(), CliError> {
    let object = std::fs::read(path).map_err(|source| CliError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let decode_error = |source| CliError::Decode {
        path: path.display().to_string(),
        source,
    };
    let summary = match case {
        Case::Read => object.len() as u64,
        Case::Gunzip => {
            let mut counter = CountingSink(0);
            let mut decoder = MultiGzDecoder::new(&mut counter);
            for chunk in object.chunks(CHUNK_BYTES) {
                decoder.write_all(chunk).map_err(CliError::from_write)?;
            }
            decoder.finish().map_err(CliError::from_write)?;
            counter.0
        }
        Case::Tally => {
            let lines = ObjectLines::new(FlowFormat::default(), RejectTally::default());
            let mut decoder = ObjectDecoder::new(lines, DecodeLimits::default());
            for chunk in object.chunks(CHUNK_BYTES) {
                decoder.write(chunk).map_err(decode_error)?;
            }
            let tally = decoder.finish().map_err(decode_error)?.into_records();
            tally.totals().records
        }
    };
    println!("{summary}");
    Ok(())
}

struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
