//! The names of flow-log objects in S3: which keys VPC Flow Logs writes, the time in their
//! file names, and the URL encoding S3 event notifications give a key. Pure text work, no
//! I/O here (decoding a notification's key is `decode::decode_s3_key`).
//!
//! AWS names an object
//! `AWSLogs/{account}/vpcflowlogs/{region}/{yyyy}/{mm}/{dd}/{account}_vpcflowlogs_{region}_{flow-log-id}_{YYYYMMDDTHHmmZ}_{hash}.log.gz`,
//! or with Hive-compatible prefixes
//! `AWSLogs/aws-account-id={account}/aws-service=vpcflowlogs/aws-region={region}/year={yyyy}/month={mm}/day={dd}/[hour={HH}/]{same file name}`,
//! under an optional bucket prefix; Parquet objects end in `.log.parquet` instead.

use crate::time::parse_utc;

/// The regular expression (for `regex-lite`) matching the keys VPC Flow Logs writes, in
/// the plain and the Hive-compatible layouts (and the transit gateway guide's `service=`
/// spelling), under any bucket prefix; text and Parquet objects alike.
///
/// The ingest function's default `FLOW_LOG_KEY_PATTERN`, and what `rejectwatch replay`
/// lists by default.
pub const FLOW_LOG_KEY_PATTERN: &str =
    r"(^|/)AWSLogs/(aws-account-id=)?[0-9]{12}/((aws-)?service=)?vpcflowlogs/";

/// The time in a flow-log object's file name (`..._20240501T1620Z_{hash}.log.gz`) as unix
/// seconds: when AWS closed the file, the end of the records' span (a file stamped 16:20
/// holds records from about 16:15 to 16:20).
///
/// `None` when the file name has no such stamp (a renamed or non-flow-log object) or the
/// stamp is not a real date and time; the folders' dates are not read.
pub fn key_time(key: &str) -> Option<u64> {
    let file_name = key.rsplit('/').next().unwrap_or(key);
    // The stamp is the second part from the end (the hash and extension follow it); the
    // parts before it (account, region, flow log id) cannot take its shape.
    let stamp = file_name.split('_').rev().find(|part| is_stamp(part))?;
    let digits = |range: std::ops::Range<usize>| &stamp[range];
    parse_utc(&format!(
        "{}-{}-{}T{}:{}:00Z",
        digits(0..4),
        digits(4..6),
        digits(6..8),
        digits(9..11),
        digits(11..13)
    ))
}

/// `YYYYMMDDTHHmmZ`: eight digits, `T`, four digits, `Z`.
fn is_stamp(part: &str) -> bool {
    let bytes = part.as_bytes();
    bytes.len() == 14
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[8] == b'T'
        && bytes[9..13].iter().all(u8::is_ascii_digit)
        && bytes[13] == b'Z'
}

/// Encodes a key as S3 event notifications carry it: a space as `+`, letters, digits,
/// `-`, `_`, `.`, `*` and `/` as they are, every other byte of its UTF-8 as `%XX`
/// (so Hive-style `year=2024` becomes `year%3D2024`).
///
/// The inverse of `decode::decode_s3_key` for every key.
pub fn encode_s3_key(key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(key.len() + key.len() / 4);
    for &byte in key.as_bytes() {
        match byte {
            b' ' => encoded.push('+'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => {
                encoded.push(char::from(byte));
            }
            other => {
                encoded.push('%');
                encoded.push(char::from(HEX[usize::from(other >> 4)]));
                encoded.push(char::from(HEX[usize::from(other & 0x0f)]));
            }
        }
    }
    encoded
}

/// Why an S3 notification record is not counted; `None` from [`s3_record_skip`] means it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3RecordSkip {
    /// The event is not an `ObjectCreated:*` one (a deletion, a restore, ...).
    NotObjectCreation,
    /// The key is not one VPC Flow Logs writes (`FLOW_LOG_KEY_PATTERN`).
    NotFlowLogKey,
    /// The bucket is left out by `COUNT_S3_BUCKETS`.
    BucketNotCounted,
}

/// Which S3 notification records the ingest function counts, in the order it checks:
/// the event's name (records without one, as some emulators send, count as creations),
/// then whether the key is a flow-log key, then whether the bucket is counted.
pub fn s3_record_skip(
    event_name: Option<&str>,
    is_flow_log_key: bool,
    bucket_counted: bool,
) -> Option<S3RecordSkip> {
    if event_name.is_some_and(|name| !name.starts_with("ObjectCreated")) {
        Some(S3RecordSkip::NotObjectCreation)
    } else if !is_flow_log_key {
        Some(S3RecordSkip::NotFlowLogKey)
    } else if !bucket_counted {
        Some(S3RecordSkip::BucketNotCounted)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_s3_records_are_counted() {
        use S3RecordSkip::*;
        let cases = [
            // (event name, flow-log key, bucket counted) -> skip
            ((Some("ObjectCreated:Put"), true, true), None),
            (
                (Some("ObjectCreated:CompleteMultipartUpload"), true, true),
                None,
            ),
            ((None, true, true), None),
            (
                (Some("ObjectRemoved:Delete"), true, true),
                Some(NotObjectCreation),
            ),
            (
                (Some("ObjectRestore:Completed"), false, false),
                Some(NotObjectCreation),
            ),
            (
                (Some("ObjectCreated:Copy"), false, true),
                Some(NotFlowLogKey),
            ),
            ((None, false, false), Some(NotFlowLogKey)),
            (
                (Some("ObjectCreated:Put"), true, false),
                Some(BucketNotCounted),
            ),
        ];
        for ((event_name, is_flow_log_key, bucket_counted), expected) in cases {
            assert_eq!(
                s3_record_skip(event_name, is_flow_log_key, bucket_counted),
                expected,
                "{event_name:?} {is_flow_log_key} {bucket_counted}"
            );
        }
    }
    use crate::decode::decode_s3_key;

    const FILE: &str = "123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20180620T1620Z_fe123456";

    fn check(key: &str, expected: Option<&str>) {
        assert_eq!(
            key_time(key),
            expected.map(|text| parse_utc(text).unwrap()),
            "{key}"
        );
    }

    #[test]
    fn plain_layout_key_gives_the_file_names_time() {
        check(
            &format!("AWSLogs/123456789012/vpcflowlogs/us-east-1/2018/06/20/{FILE}.log.gz"),
            Some("2018-06-20T16:20:00Z"),
        );
    }

    #[test]
    fn hive_layout_with_hourly_partitions_and_a_bucket_prefix() {
        check(
            &format!(
                "my-logs/AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2018/month=06/day=20/hour=16/{FILE}.log.gz"
            ),
            Some("2018-06-20T16:20:00Z"),
        );
    }

    #[test]
    fn parquet_key_has_the_same_stamp() {
        check(
            &format!("AWSLogs/123456789012/vpcflowlogs/us-east-1/2018/06/20/{FILE}.log.parquet"),
            Some("2018-06-20T16:20:00Z"),
        );
    }

    #[test]
    fn a_stamp_at_midnight_at_the_end_of_a_leap_year() {
        check(
            "AWSLogs/123456789012/vpcflowlogs/eu-west-1/2024/12/31/123456789012_vpcflowlogs_eu-west-1_fl-0a1b2c3d4e5f67890_20241231T2355Z_0123abcd.log.gz",
            Some("2024-12-31T23:55:00Z"),
        );
    }

    #[test]
    fn a_file_name_without_a_stamp_has_no_time() {
        check(
            "AWSLogs/123456789012/vpcflowlogs/us-east-1/2018/06/20/renamed.log.gz",
            None,
        );
        check("notes/readme.txt", None);
        check("", None);
    }

    #[test]
    fn a_stamp_in_a_folder_name_is_not_read() {
        check("backup_20180620T1620Z_x/renamed.log.gz", None);
    }

    #[test]
    fn an_impossible_date_or_time_has_no_time() {
        check("a_20181320T1620Z_h.log.gz", None);
        check("a_20180620T2560Z_h.log.gz", None);
        check("a_2018062XT1620Z_h.log.gz", None);
    }

    #[test]
    fn keys_are_encoded_as_s3_notifications_carry_them() {
        for (key, encoded) in [
            ("AWSLogs/1/x.log.gz", "AWSLogs/1/x.log.gz"),
            (
                "AWSLogs/aws-account-id=1/year=2024/x.log.gz",
                "AWSLogs/aws-account-id%3D1/year%3D2024/x.log.gz",
            ),
            ("my logs/a+b", "my+logs/a%2Bb"),
            ("caf\u{e9}:(1)~", "caf%C3%A9%3A%281%29%7E"),
            ("", ""),
        ] {
            assert_eq!(encode_s3_key(key), encoded, "{key}");
        }
    }

    #[test]
    fn encoding_then_decoding_gives_the_key_back() {
        for key in [
            "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/x.log.gz",
            "a b+c%d/e=f&g?h#i",
            "\u{1f600}/\u{e9}\t\n",
        ] {
            assert_eq!(decode_s3_key(&encode_s3_key(key)).as_deref(), Ok(key));
        }
    }
}
