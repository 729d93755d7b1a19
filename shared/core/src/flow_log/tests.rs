//! Tests of the parser as a whole: the documented formats and example records, header
//! lines, malformed lines and the text of their errors, JSON output, and properties.

use super::parse::quoted;
use super::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The default format as users copy it from the console.
const DEFAULT_LOG_FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} \
    ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} \
    ${action} ${log-status}";
/// "TCP flag sequence" example format (AWS docs), with `bytes` before `packets`.
const TCP_FLAGS_FORMAT: &str = "version vpc-id subnet-id instance-id interface-id account-id \
    type srcaddr dstaddr srcport dstport pkt-srcaddr pkt-dstaddr protocol bytes packets \
    start end action tcp-flags log-status";
/// "Traffic through a NAT gateway" example format: no version, action or log-status.
const NAT_FORMAT: &str = "${instance-id} ${interface-id} ${srcaddr} ${dstaddr} \
    ${pkt-srcaddr} ${pkt-dstaddr}";
/// "Traffic through a transit gateway" example format (a VPC flow log, version 3).
const VPC_VIA_TGW_FORMAT: &str = "version interface-id account-id vpc-id subnet-id \
    instance-id srcaddr dstaddr srcport dstport protocol tcp-flags type pkt-srcaddr \
    pkt-dstaddr action log-status";
/// "Service name, traffic path, and flow direction" example format (version 5).
const V5_FORMAT: &str = "version srcaddr dstaddr srcport dstport protocol start end type \
    packets bytes account-id vpc-id subnet-id instance-id interface-id region az-id \
    sublocation-type sublocation-id action tcp-flags pkt-srcaddr pkt-dstaddr \
    pkt-src-aws-service pkt-dst-aws-service traffic-path flow-direction log-status";
/// Transit gateway flow logs' default field order (36 fields, version 6, no `action`).
const TGW_FORMAT: &str = "${version} ${resource-type} ${account-id} ${tgw-id} \
    ${tgw-attachment-id} ${tgw-src-vpc-account-id} ${tgw-dst-vpc-account-id} \
    ${tgw-src-vpc-id} ${tgw-dst-vpc-id} ${tgw-src-subnet-id} ${tgw-dst-subnet-id} \
    ${tgw-src-eni} ${tgw-dst-eni} ${tgw-src-az-id} ${tgw-dst-az-id} \
    ${tgw-pair-attachment-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} \
    ${packets} ${bytes} ${start} ${end} ${log-status} ${type} ${packets-lost-no-route} \
    ${packets-lost-blackhole} ${packets-lost-mtu-exceeded} ${packets-lost-ttl-expired} \
    ${tcp-flags} ${region} ${flow-direction} ${pkt-src-aws-service} ${pkt-dst-aws-service}";
/// The format of AWS's VPC Block Public Access example template (version 8).
const BPA_FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} \
    ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} \
    ${log-status} ${vpc-id} ${subnet-id} ${instance-id} ${tcp-flags} ${type} \
    ${pkt-srcaddr} ${pkt-dstaddr} ${region} ${az-id} ${sublocation-type} \
    ${sublocation-id} ${pkt-src-aws-service} ${pkt-dst-aws-service} ${flow-direction} \
    ${traffic-path} ${reject-reason}";
/// Default fields followed by the ECS fields (version 7).
const ECS_FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} \
    ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} \
    ${log-status} ${ecs-cluster-name} ${ecs-cluster-arn} ${ecs-container-instance-id} \
    ${ecs-container-instance-arn} ${ecs-service-name} ${ecs-task-definition-arn} \
    ${ecs-task-id} ${ecs-task-arn} ${ecs-container-id} ${ecs-second-container-id}";

fn v4(text: &str) -> FieldValue<'static> {
    FieldValue::Address(text.parse().unwrap())
}

fn num(value: u64) -> FieldValue<'static> {
    FieldValue::Number(value)
}

/// Parses `line` with `format` and checks the listed fields; `None` means absent.
fn check(format: &str, line: &str, expected: &[(Field, Option<FieldValue<'_>>)]) {
    let format = FlowFormat::from_log_format(format).unwrap();
    let mut parser = RecordParser::new(format);
    let record = parser
        .parse(line)
        .unwrap_or_else(|error| panic!("{line:?}: {error}"));
    for (field, value) in expected {
        assert_eq!(record.value(*field), *value, "field {field} of {line:?}");
    }
}

fn parse_error(format: &str, line: &str) -> ParseError {
    let mut parser = RecordParser::new(FlowFormat::from_log_format(format).unwrap());
    parser.parse(line).map(|_| ()).unwrap_err()
}

#[test]
fn default_format_is_the_documented_v2_layout() {
    let format = FlowFormat::default();
    assert_eq!(
        format,
        FlowFormat::from_log_format(DEFAULT_LOG_FORMAT).unwrap()
    );
    assert_eq!(
        format.to_string(),
        DEFAULT_LOG_FORMAT
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(
        format.header_line(),
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets \
         bytes start end action log-status"
    );
}

#[test]
fn accepted_ssh_record() {
    check(
        DEFAULT_LOG_FORMAT,
        "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
        &[
            (Field::Version, Some(num(2))),
            (Field::AccountId, Some(FieldValue::Text("123456789010"))),
            (
                Field::InterfaceId,
                Some(FieldValue::Text("eni-1235b8ca123456789")),
            ),
            (Field::SrcAddr, Some(v4("172.31.16.139"))),
            (Field::DstAddr, Some(v4("172.31.16.21"))),
            (Field::SrcPort, Some(num(20641))),
            (Field::DstPort, Some(num(22))),
            (Field::Protocol, Some(num(6))),
            (Field::Packets, Some(num(20))),
            (Field::Bytes, Some(num(4249))),
            (Field::Start, Some(num(1418530010))),
            (Field::End, Some(num(1418530070))),
            (Field::Action, Some(FieldValue::Action(Action::Accept))),
            (Field::LogStatus, Some(FieldValue::LogStatus(LogStatus::Ok))),
        ],
    );
}

#[test]
fn rejected_rdp_record() {
    check(
        DEFAULT_LOG_FORMAT,
        "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
        &[
            (Field::SrcAddr, Some(v4("172.31.9.69"))),
            (Field::DstPort, Some(num(3389))),
            (Field::Action, Some(FieldValue::Action(Action::Reject))),
        ],
    );
}

#[test]
fn nodata_record_has_absent_traffic_fields() {
    let line = "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA";
    let mut expected: Vec<(Field, Option<FieldValue>)> = [
        Field::SrcAddr,
        Field::DstAddr,
        Field::SrcPort,
        Field::DstPort,
        Field::Protocol,
        Field::Packets,
        Field::Bytes,
        Field::Action,
    ]
    .iter()
    .map(|&field| (field, None))
    .collect();
    expected.push((Field::Start, Some(num(1431280876))));
    expected.push((
        Field::LogStatus,
        Some(FieldValue::LogStatus(LogStatus::NoData)),
    ));
    check(DEFAULT_LOG_FORMAT, line, &expected);
}

#[test]
fn skipdata_record_is_a_gap_report() {
    let mut parser = RecordParser::new(FlowFormat::default());
    let record = parser
        .parse(
            "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA",
        )
        .unwrap();
    assert_eq!(record.log_status(), Some(LogStatus::SkipData));
    assert_eq!(record.action(), None);
    assert!(!record.has_traffic());
    assert_eq!(
        record.text(Field::InterfaceId),
        Some("eni-11111111aaaaaaaaa")
    );
}

#[test]
fn icmp_ping_pair_has_zero_ports() {
    check(
        DEFAULT_LOG_FORMAT,
        "2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 1 4 336 1432917027 1432917142 ACCEPT OK",
        &[
            (Field::SrcPort, Some(num(0))),
            (Field::DstPort, Some(num(0))),
            (Field::Protocol, Some(num(1))),
        ],
    );
    check(
        DEFAULT_LOG_FORMAT,
        "2 123456789010 eni-1235b8ca123456789 172.31.16.139 203.0.113.12 0 0 1 4 336 1432917094 1432917142 REJECT OK",
        &[
            (Field::SrcAddr, Some(v4("172.31.16.139"))),
            (Field::Action, Some(FieldValue::Action(Action::Reject))),
        ],
    );
}

#[test]
fn ipv6_record() {
    check(
        DEFAULT_LOG_FORMAT,
        "2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 2001:db8:1234:a102:3304:8879:34cf:4071 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK",
        &[
            (
                Field::SrcAddr,
                Some(FieldValue::Address(IpAddr::V6(Ipv6Addr::new(
                    0x2001, 0xdb8, 0x1234, 0xa100, 0x8d6e, 0x3477, 0xdf66, 0xf105,
                )))),
            ),
            (Field::Bytes, Some(num(8855))),
        ],
    );
}

#[test]
fn tcp_flag_sequence_records_parse_in_their_custom_order() {
    let records = [
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43416 5001 52.213.180.42 10.0.0.62 6 568 8 1566848875 1566848933 ACCEPT 2 OK",
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43416 10.0.0.62 52.213.180.42 6 376 7 1566848875 1566848933 ACCEPT 18 OK",
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43418 5001 52.213.180.42 10.0.0.62 6 100701 70 1566848875 1566848933 ACCEPT 2 OK",
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43418 10.0.0.62 52.213.180.42 6 632 12 1566848875 1566848933 ACCEPT 18 OK",
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43418 10.0.0.62 52.213.180.42 6 63388 1219 1566848933 1566849113 ACCEPT 1 OK",
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43418 5001 52.213.180.42 10.0.0.62 6 23294588 15774 1566848933 1566849113 ACCEPT 1 OK",
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43638 5001 52.213.180.42 10.0.0.62 6 1260 17 1566933133 1566933193 ACCEPT 3 OK",
    ];
    let flags = [2, 18, 2, 18, 1, 1, 3];
    for (line, flag) in records.iter().zip(flags) {
        check(
            TCP_FLAGS_FORMAT,
            line,
            &[
                (Field::TcpFlags, Some(num(flag))),
                (Field::Type, Some(FieldValue::Text("IPv4"))),
            ],
        );
    }
    check(
        TCP_FLAGS_FORMAT,
        records[2],
        &[
            (Field::Bytes, Some(num(100701))),
            (Field::Packets, Some(num(70))),
        ],
    );
}

#[test]
fn double_space_record_from_the_aws_documentation_parses() {
    // Verbatim from the "TCP flag sequence" example: two spaces after 43638.
    check(
        TCP_FLAGS_FORMAT,
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43638  10.0.0.62 52.213.180.42 6 967 14 1566933133 1566933193 ACCEPT 19 OK",
        &[
            (Field::DstPort, Some(num(43638))),
            (Field::PktSrcAddr, Some(v4("10.0.0.62"))),
            (Field::PktDstAddr, Some(v4("52.213.180.42"))),
            (Field::Bytes, Some(num(967))),
            (Field::TcpFlags, Some(num(19))),
            (Field::LogStatus, Some(FieldValue::LogStatus(LogStatus::Ok))),
        ],
    );
}

#[test]
fn nat_gateway_format_has_no_action_and_cannot_count_rejects() {
    let format = FlowFormat::from_log_format(NAT_FORMAT).unwrap();
    assert!(!format.can_count_rejects());
    for line in [
        "- eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5",
        "- eni-1235b8ca123456789 10.0.0.220 203.0.113.5 10.0.0.220 203.0.113.5",
        "- eni-1235b8ca123456789 203.0.113.5 10.0.0.220 203.0.113.5 10.0.0.220",
        "- eni-1235b8ca123456789 10.0.0.220 10.0.1.5 203.0.113.5 10.0.1.5",
    ] {
        check(
            NAT_FORMAT,
            line,
            &[(Field::InstanceId, None), (Field::Action, None)],
        );
    }
    check(
        NAT_FORMAT,
        "i-01234567890123456 eni-1111aaaa2222bbbb3 203.0.113.5 10.0.1.5 203.0.113.5 10.0.1.5",
        &[
            (
                Field::InstanceId,
                Some(FieldValue::Text("i-01234567890123456")),
            ),
            (Field::PktSrcAddr, Some(v4("203.0.113.5"))),
        ],
    );
}

#[test]
fn vpc_traffic_through_a_transit_gateway_is_an_ordinary_vpc_record() {
    let format = FlowFormat::from_log_format(VPC_VIA_TGW_FORMAT).unwrap();
    assert!(format.can_count_rejects());
    check(
        VPC_VIA_TGW_FORMAT,
        "3 eni-11111111111111111 123456789010 vpc-abcdefab012345678 subnet-11111111aaaaaaaaa - 10.40.1.175 10.40.2.236 39812 80 6 3 IPv4 10.20.33.164 10.40.2.236 ACCEPT OK",
        &[
            (Field::InstanceId, None),
            (Field::SrcAddr, Some(v4("10.40.1.175"))),
            (Field::PktSrcAddr, Some(v4("10.20.33.164"))),
        ],
    );
}

#[test]
fn version_5_ingress_and_egress_records() {
    check(
        V5_FORMAT,
        "5 52.95.128.179 10.0.0.71 80 34210 6 1616729292 1616729349 IPv4 14 15044 123456789012 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 apse2-az3 - - ACCEPT 19 52.95.128.179 10.0.0.71 S3 - - ingress OK",
        &[
            (Field::Region, Some(FieldValue::Text("ap-southeast-2"))),
            (Field::AzId, Some(FieldValue::Text("apse2-az3"))),
            (Field::SublocationType, None),
            (Field::PktSrcAwsService, Some(FieldValue::Text("S3"))),
            (Field::PktDstAwsService, None),
            (Field::TrafficPath, None),
            (Field::FlowDirection, Some(FieldValue::Text("ingress"))),
        ],
    );
    check(
        V5_FORMAT,
        "5 10.0.0.71 52.95.128.179 34210 80 6 1616729292 1616729349 IPv4 7 471 123456789012 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 apse2-az3 - - ACCEPT 3 10.0.0.71 52.95.128.179 - S3 8 egress OK",
        &[
            (Field::PktDstAwsService, Some(FieldValue::Text("S3"))),
            (Field::TrafficPath, Some(num(8))),
            (Field::FlowDirection, Some(FieldValue::Text("egress"))),
        ],
    );
}

#[test]
fn transit_gateway_flow_log_record_is_recognised_and_not_countable() {
    // AWS publishes no transit gateway record; this one follows the documented 36-field
    // default order and value types.
    let line = "6 TransitGateway 123456789010 tgw-0123456789abcdef0 tgw-attach-0123456789abcdef0 \
        123456789010 123456789011 vpc-0123456789abcdef0 vpc-0123456789abcdef1 \
        subnet-0123456789abcdef0 subnet-0123456789abcdef1 eni-0123456789abcdef0 \
        eni-0123456789abcdef1 use1-az1 use1-az2 tgw-attach-0123456789abcdef1 10.0.1.5 \
        10.1.1.7 43416 443 6 10 840 1700000000 1700000060 OK IPv4 0 0 0 0 2 us-east-1 \
        ingress - -";
    let format = FlowFormat::from_log_format(TGW_FORMAT).unwrap();
    assert_eq!(format.width(), 36);
    assert!(format.is_transit_gateway());
    assert!(!format.can_count_rejects());
    check(
        TGW_FORMAT,
        line,
        &[
            (
                Field::ResourceType,
                Some(FieldValue::Text("TransitGateway")),
            ),
            (
                Field::TgwId,
                Some(FieldValue::Text("tgw-0123456789abcdef0")),
            ),
            (Field::PacketsLostNoRoute, Some(num(0))),
            (Field::DstPort, Some(num(443))),
            (Field::PktSrcAwsService, None),
        ],
    );
}

#[test]
fn ecs_fields_are_text_and_may_be_absent() {
    let line = "7 123456789010 eni-1235b8ca123456789 10.0.1.9 10.0.2.4 51000 8080 6 3 180 \
        1700000000 1700000050 REJECT OK web arn:aws:ecs:us-east-1:123456789010:cluster/web - - \
        web-svc arn:aws:ecs:us-east-1:123456789010:task-definition/web:7 \
        0a1b2c3d4e5f67890a1b2c3d4e5f6789 \
        arn:aws:ecs:us-east-1:123456789010:task/web/0a1b2c3d4e5f67890a1b2c3d4e5f6789 \
        3f4e5d6c7b8a - ";
    check(
        ECS_FORMAT,
        line,
        &[
            (Field::EcsClusterName, Some(FieldValue::Text("web"))),
            (Field::EcsContainerInstanceArn, None),
            (Field::EcsServiceName, Some(FieldValue::Text("web-svc"))),
            (Field::EcsSecondContainerId, None),
            (Field::Action, Some(FieldValue::Action(Action::Reject))),
        ],
    );
}

#[test]
fn reject_reason_bpa_with_bytes_absent() {
    // VPC Block Public Access rejects carry reject-reason BPA and never `bytes`.
    let line = "8 123456789010 eni-1235b8ca123456789 198.51.100.7 10.0.0.71 51515 22 6 1 - \
        1700000000 1700000030 REJECT OK vpc-abcdefab012345678 subnet-aaaaaaaa012345678 \
        i-0c50d5961bcb2d47b 2 IPv4 198.51.100.7 10.0.0.71 us-east-1 use1-az1 - - - - \
        ingress - BPA";
    check(
        BPA_FORMAT,
        line,
        &[
            (Field::Bytes, None),
            (Field::RejectReason, Some(FieldValue::Text("BPA"))),
            (Field::Version, Some(num(8))),
        ],
    );
}

#[test]
fn version_value_does_not_decide_the_layout() {
    // A version-2 record read with a format that lists fields in another order.
    check(
        "${srcaddr} ${version} ${action}",
        "10.0.0.1 5 REJECT",
        &[
            (Field::SrcAddr, Some(v4("10.0.0.1"))),
            (Field::Version, Some(num(5))),
        ],
    );
}

#[test]
fn unknown_fields_are_kept_as_text() {
    let format = FlowFormat::from_log_format("${version} ${encryption-status} ${srcaddr}").unwrap();
    assert_eq!(
        format.columns()[1],
        Column::Unknown("encryption-status".into())
    );
    let mut parser = RecordParser::new(format);
    let record = parser.parse("10 2 10.0.0.1").unwrap();
    assert_eq!(record.column_value(1), Some(FieldValue::Text("2")));
    assert_eq!(
        serde_json::to_string(&record).unwrap(),
        r#"{"version":10,"encryption-status":"2","srcaddr":"10.0.0.1"}"#
    );
}

#[test]
fn any_braced_unknown_name_is_an_opaque_text_column() {
    let format =
        FlowFormat::from_log_format("${Srcaddr} ${custom.field:v2} ${x=1} ${action}").unwrap();
    assert_eq!(
        format.columns(),
        &[
            Column::Unknown("Srcaddr".into()),
            Column::Unknown("custom.field:v2".into()),
            Column::Unknown("x=1".into()),
            Column::Known(Field::Action),
        ]
    );
    assert_eq!(
        format.to_string(),
        "${Srcaddr} ${custom.field:v2} ${x=1} ${action}"
    );
    let mut parser = RecordParser::new(format);
    let record = parser.parse("10.0.0.1 a:b - REJECT").unwrap();
    assert_eq!(record.column_value(0), Some(FieldValue::Text("10.0.0.1")));
    assert_eq!(record.column_value(1), Some(FieldValue::Text("a:b")));
    assert_eq!(record.column_value(2), None);
    assert_eq!(record.action(), Some(Action::Reject));
}

#[test]
fn account_id_may_be_unknown_and_tcp_flags_absent() {
    check(
        "${account-id} ${tcp-flags} ${action}",
        "unknown - REJECT",
        &[
            (Field::AccountId, Some(FieldValue::Text("unknown"))),
            (Field::TcpFlags, None),
        ],
    );
}

#[test]
fn underscore_names_are_accepted_as_hyphenated() {
    let format = FlowFormat::from_log_format("${log_status} ${pkt_srcaddr}").unwrap();
    assert_eq!(
        format.columns(),
        &[
            Column::Known(Field::LogStatus),
            Column::Known(Field::PktSrcAddr)
        ]
    );
}

#[test]
fn every_documented_name_round_trips() {
    for &field in Field::ALL {
        assert_eq!(Field::from_name(field.name()), Some(field));
    }
    assert_eq!(Field::ALL.len(), 58);
}

#[test]
fn format_errors_name_the_token() {
    assert_eq!(FlowFormat::from_log_format(""), Err(FormatError::Empty));
    assert_eq!(
        FlowFormat::from_log_format("${version} ${srcaddr"),
        Err(FormatError::BadToken {
            token: "${srcaddr".into()
        })
    );
    for bad in ["${}", "${a}b}", "${a{b}", "${$a}", "Srcaddr", "srcaddr}"] {
        assert_eq!(
            FlowFormat::from_log_format(&format!("${{version}} {bad}")),
            Err(FormatError::BadToken { token: bad.into() }),
            "{bad}"
        );
    }
    assert_eq!(
        FlowFormat::from_log_format("${srcaddr} ${version} ${srcaddr}"),
        Err(FormatError::Duplicate {
            name: "srcaddr".into()
        })
    );
}

#[test]
fn header_lines_are_told_apart_from_records() {
    assert!(FlowFormat::is_header_line(
        &FlowFormat::default().header_line()
    ));
    assert!(FlowFormat::is_header_line(
        "instance-id interface-id srcaddr dstaddr pkt-srcaddr pkt-dstaddr"
    ));
    assert!(!FlowFormat::is_header_line(
        "- eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5"
    ));
    assert!(!FlowFormat::is_header_line(
        "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK"
    ));
    assert!(!FlowFormat::is_header_line("eni-abc vpc-def"));
}

#[test]
fn too_few_fields_is_malformed() {
    assert_eq!(
        parse_error(
            DEFAULT_LOG_FORMAT,
            "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT"
        ),
        ParseError::FieldCount {
            expected: 14,
            found: 13,
            excerpt: "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 3389 6 20 424".into()
        }
    );
}

#[test]
fn an_interface_id_too_long_to_store_is_malformed() {
    let long = format!("eni-{}", "a".repeat(61));
    let line = format!(
        "2 123456789010 {long} 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK"
    );
    assert_eq!(
        parse_error(DEFAULT_LOG_FORMAT, &line),
        ParseError::TooLongValue {
            field: Field::InterfaceId,
            length: 65,
            max: 64,
            value: quoted(&long),
        }
    );
    // 64 bytes are stored as they are, on the fast path and the general one alike.
    let fits = &long[..64];
    let line = line.replace(&long, fits);
    let mut parser = RecordParser::new(FlowFormat::default());
    assert_eq!(
        parser.parse(&line).unwrap().text(Field::InterfaceId),
        Some(fits)
    );
    // Reject reasons name attributes: bounded too.
    assert!(matches!(
        parse_error(
            "${srcaddr} ${action} ${reject-reason}",
            &format!("198.51.100.7 REJECT {}", "B".repeat(65))
        ),
        ParseError::TooLongValue {
            field: Field::RejectReason,
            ..
        }
    ));
    // A NODATA record's interface becomes a sort key: bounded the same way.
    let nodata = format!("2 123456789010 {long} - - - - - - - 1418530010 1418530070 - NODATA");
    assert!(matches!(
        parse_error(DEFAULT_LOG_FORMAT, &nodata),
        ParseError::TooLongValue { .. }
    ));
}

#[test]
fn an_ipv4_mapped_ipv6_address_reads_as_ipv4() {
    let mut parser = RecordParser::new(FlowFormat::default());
    let record = parser
            .parse("2 123456789010 eni-1 ::ffff:198.51.100.7 ::ffff:10.0.0.5 49761 22 6 1 40 1418530010 1418530070 REJECT OK")
            .unwrap();
    assert_eq!(
        record.address(Field::SrcAddr),
        Some("198.51.100.7".parse().unwrap())
    );
    assert_eq!(
        record.address(Field::DstAddr),
        Some("10.0.0.5".parse().unwrap())
    );
    assert_eq!(
        record.address_bits(Field::SrcAddr),
        Some(AddressBits::V4(u32::from(Ipv4Addr::new(198, 51, 100, 7))))
    );
    // Other IPv6 addresses stay as they are, the IPv4-compatible form (::a.b.c.d) too.
    let record = parser
            .parse("2 123456789010 eni-1 ::198.51.100.7 2001:db8::1 49761 22 6 1 40 1418530010 1418530070 REJECT OK")
            .unwrap();
    assert_eq!(
        record.address(Field::SrcAddr),
        Some("::198.51.100.7".parse().unwrap())
    );
}

#[test]
fn too_many_fields_is_malformed() {
    assert_eq!(
        parse_error(
            DEFAULT_LOG_FORMAT,
            "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK extra"
        ),
        ParseError::FieldCount {
            expected: 14,
            found: 15,
            excerpt: "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 3389 6 20 424".into()
        }
    );
}

#[test]
fn a_missing_field_is_reported_as_a_count_not_as_the_shifted_value() {
    // dstport is missing, so "6" lands in dstport and "20" in protocol... and the
    // first value error would be misleading.
    assert_eq!(
        parse_error(
            DEFAULT_LOG_FORMAT,
            "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 6 20 4249 1418530010 1418530070 REJECT OK"
        ),
        ParseError::FieldCount {
            expected: 14,
            found: 13,
            excerpt: "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 6 20 4249 141".into()
        }
    );
}

#[test]
fn non_numeric_port_names_field_and_value() {
    let error = parse_error(
        DEFAULT_LOG_FORMAT,
        "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 ssh 6 20 4249 1418530010 1418530070 REJECT OK",
    );
    assert_eq!(
        error,
        ParseError::NotANumber {
            field: Field::DstPort,
            value: "ssh".into()
        }
    );
    let reason = MalformedLine {
        line_number: 7,
        error,
    }
    .to_string();
    assert_eq!(reason, r#"line 7: dstport: "ssh" is not a number"#);
}

#[test]
fn port_out_of_range_is_malformed() {
    assert_eq!(
        parse_error(
            DEFAULT_LOG_FORMAT,
            "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 70000 6 20 4249 1418530010 1418530070 REJECT OK"
        ),
        ParseError::OutOfRange {
            field: Field::DstPort,
            value: "70000".into(),
            max: 65535
        }
    );
    assert_eq!(
        parse_error("${packets}", "99999999999999999999999"),
        ParseError::OutOfRange {
            field: Field::Packets,
            value: "99999999999999999999999".into(),
            max: u64::MAX
        }
    );
}

#[test]
fn bad_address_is_malformed() {
    for bad in [
        "172.31.9",
        "172.31.9.256",
        "172.31.09.1",
        "host.example",
        "1.2.3.4.5",
        "2001:db8::g",
    ] {
        assert_eq!(
            parse_error("${srcaddr}", bad),
            ParseError::NotAnAddress {
                field: Field::SrcAddr,
                value: bad.into()
            },
            "{bad}"
        );
    }
}

#[test]
fn unknown_action_and_status_are_malformed() {
    assert!(matches!(
        parse_error("${action}", "DROP"),
        ParseError::UnknownKeyword {
            field: Field::Action,
            ..
        }
    ));
    assert!(matches!(
        parse_error("${log-status}", "ok"),
        ParseError::UnknownKeyword {
            field: Field::LogStatus,
            ..
        }
    ));
}

#[test]
fn cloudwatch_export_timestamp_is_stripped() {
    check(
        DEFAULT_LOG_FORMAT,
        "2024-05-01T12:00:00.000Z 2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
        &[
            (Field::Version, Some(num(2))),
            (Field::SrcAddr, Some(v4("172.31.9.69"))),
        ],
    );
}

#[test]
fn cloudwatch_export_timestamp_with_wrong_count_is_rejected_not_shifted() {
    // One field short after the timestamp: the timestamp must not fill column one.
    assert_eq!(
        parse_error(
            "${account-id} ${interface-id} ${action}",
            "2024-05-01T12:00:00.000Z 123456789010 REJECT"
        ),
        ParseError::ExportTimestamp {
            expected: 3,
            found: 2,
            excerpt: "2024-05-01T12:00:00.000Z 123456789010 REJECT".into()
        }
    );
}

#[test]
fn millisecond_times_are_normalised_to_seconds() {
    check(
        "${start} ${end}",
        "1418530010000 1418530070999",
        &[
            (Field::Start, Some(num(1418530010))),
            (Field::End, Some(num(1418530070))),
        ],
    );
}

#[test]
fn crlf_and_surrounding_spaces_are_ignored() {
    check(
        "${srcaddr} ${action}",
        "  10.0.0.1   REJECT \r",
        &[(Field::Action, Some(FieldValue::Action(Action::Reject)))],
    );
}

#[test]
fn records_serialise_as_json_keyed_by_field_name() {
    let mut parser = RecordParser::new(FlowFormat::default());
    let record = parser
        .parse("2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA")
        .unwrap();
    assert_eq!(
        serde_json::to_string(&record).unwrap(),
        r#"{"version":2,"account-id":"123456789010","interface-id":"eni-1235b8ca123456789","start":1431280876,"end":1431280934,"log-status":"NODATA"}"#
    );
}

#[test]
fn count_errors_quote_the_start_of_the_line() {
    let reason = |format: &str, line: &str| {
        MalformedLine {
            line_number: 3,
            error: parse_error(format, line),
        }
        .to_string()
    };
    assert_eq!(
        reason(DEFAULT_LOG_FORMAT, "2 x y"),
        r#"line 3: expected 14 fields, found 3: "2 x y""#
    );
    assert_eq!(
        reason("${action} ${srcaddr}", "2024-05-01T12:00:00Z REJECT"),
        r#"line 3: line starts with a timestamp (a CloudWatch Logs export?) followed by 1 fields; expected 2: "2024-05-01T12:00:00Z REJECT""#
    );
    let long = format!("{} end", "1 ".repeat(200));
    match parse_error(DEFAULT_LOG_FORMAT, &long) {
        ParseError::FieldCount { found, excerpt, .. } => {
            assert_eq!(found, 201);
            assert_eq!(excerpt, "1 ".repeat(32));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_long_quotes_the_start_of_the_line_whatever_its_bytes() {
    assert_eq!(
        ParseError::too_long(5000, &[b'9'; 300]).to_string(),
        format!(
            "line is 5000 bytes long, over the line length limit: \"{}\"",
            "9".repeat(64)
        )
    );
    let four_byte_chars = "\u{1f4a9}".repeat(100);
    match ParseError::too_long(400, four_byte_chars.as_bytes()) {
        ParseError::TooLong { excerpt, .. } => {
            assert_eq!(excerpt, "\u{1f4a9}".repeat(MAX_QUOTED_VALUE));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ParseError::too_long(9, b"ab\xff\xc3"),
        ParseError::TooLong {
            length: 9,
            excerpt: "ab\u{fffd}\u{fffd}".into()
        }
    );
}

#[test]
fn quoted_values_are_cut_short() {
    let long = "x".repeat(500);
    match parse_error("${srcport}", &long) {
        ParseError::NotANumber { value, .. } => assert_eq!(value.len(), MAX_QUOTED_VALUE),
        other => panic!("{other:?}"),
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::subsequence;

    /// Text to write, and the value expected back (`None`: absent).
    type Written = (String, Option<FieldValue<'static>>);

    /// A value of the field's kind, or absent.
    fn value_for(field: Field) -> BoxedStrategy<Written> {
        let present = match field.kind() {
            FieldKind::Number { max } => (0..=max)
                .prop_map(|n| (n.to_string(), Some(FieldValue::Number(n))))
                .boxed(),
            FieldKind::Timestamp => (0u64..100_000_000_000)
                .prop_map(|n| (n.to_string(), Some(FieldValue::Number(n))))
                .boxed(),
            FieldKind::Address => prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u16; 8]>().prop_map(IpAddr::from),
            ]
            .prop_map(|addr| (addr.to_string(), Some(FieldValue::Address(addr))))
            .boxed(),
            FieldKind::Action => prop_oneof![Just(Action::Accept), Just(Action::Reject)]
                .prop_map(|a| (a.as_str().to_owned(), Some(FieldValue::Action(a))))
                .boxed(),
            FieldKind::LogStatus => prop_oneof![
                Just(LogStatus::Ok),
                Just(LogStatus::NoData),
                Just(LogStatus::SkipData)
            ]
            .prop_map(|s| (s.as_str().to_owned(), Some(FieldValue::LogStatus(s))))
            .boxed(),
            FieldKind::Text => "[a-zA-Z0-9:/_.-]{2,40}"
                .prop_map(|text| {
                    let leaked: &'static str = Box::leak(text.clone().into_boxed_str());
                    (text, Some(FieldValue::Text(leaked)))
                })
                .boxed(),
        };
        prop_oneof![1 => Just(("-".to_owned(), None)), 6 => present].boxed()
    }

    fn shuffled_fields() -> impl Strategy<Value = Vec<Field>> {
        subsequence(Field::ALL.to_vec(), 1..=Field::ALL.len()).prop_shuffle()
    }

    /// Fields in some order, their written values, and the line they make.
    fn record_in_any_order() -> impl Strategy<Value = (Vec<Field>, Vec<Written>, String)> {
        shuffled_fields().prop_flat_map(|fields| {
            let values: Vec<_> = fields.iter().map(|&f| value_for(f)).collect();
            let separators = proptest::collection::vec(1usize..4, fields.len());
            (Just(fields), values, separators).prop_map(|(fields, values, separators)| {
                let mut line = String::new();
                for ((text, _), spaces) in values.iter().zip(&separators) {
                    line.push_str(text);
                    line.push_str(&" ".repeat(*spaces));
                }
                (fields, values, line)
            })
        })
    }

    proptest! {
        #[test]
        fn a_record_in_any_field_order_parses_back_to_its_values(
            (fields, values, line) in record_in_any_order()
        ) {
            let mut parser = RecordParser::new(FlowFormat::from_fields(&fields));
            let record = parser.parse(&line).map_err(|e| TestCaseError::fail(format!("{line:?}: {e}")))?;
            for (field, (_, expected)) in fields.iter().zip(&values) {
                prop_assert_eq!(record.value(*field), *expected, "field {}", field);
            }
        }

        #[test]
        fn the_log_format_string_round_trips(fields in shuffled_fields()) {
            let format = FlowFormat::from_fields(&fields);
            prop_assert_eq!(FlowFormat::from_log_format(&format.to_string()).unwrap(), format.clone());
            prop_assert_eq!(FlowFormat::from_header(&format.header_line()).unwrap(), format);
        }

        #[test]
        fn arbitrary_lines_never_panic(line in "\\PC{0,200}") {
            let mut parser = RecordParser::new(FlowFormat::default());
            let _ = parser.parse(&line);
        }
    }
}
