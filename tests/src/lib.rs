//! Helpers shared by the cross-crate tests and benchmarks.

pub mod moto;

use shared::decode::{DecodeError, DecodeLimits, ObjectDecoder, ObjectLines};
use shared::flow_log::FlowFormat;
use shared::tally::{RejectTally, TallyOptions};

/// Bytes handed to the decoder per call, as an S3 body or a file read delivers them.
pub const CHUNK_BYTES: usize = 256 << 10;

/// Decodes, parses and tallies a whole object held in memory, in `CHUNK_BYTES` pieces.
pub fn tally_object(object: &[u8], options: TallyOptions) -> Result<RejectTally, DecodeError> {
    let lines = ObjectLines::new(FlowFormat::default(), RejectTally::new(options));
    let mut decoder = ObjectDecoder::new(lines, DecodeLimits::default());
    for chunk in object.chunks(CHUNK_BYTES) {
        decoder.write(chunk)?;
    }
    Ok(decoder.finish()?.into_records())
}
