//! The documented flow-log fields: their names, the version that introduced each and the
//! kind of value it holds ([`Field`], [`FieldKind`]), and the `action` and `log-status`
//! keywords ([`Action`], [`LogStatus`]).

use std::fmt;

/// How a field's value is read and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// An unsigned integer no larger than `max`.
    Number { max: u64 },
    /// Unix time; values given in milliseconds are normalised to seconds.
    Timestamp,
    /// An IPv4 or IPv6 address.
    Address,
    /// `ACCEPT` or `REJECT`.
    Action,
    /// `OK`, `NODATA` or `SKIPDATA`.
    LogStatus,
    /// Any text without spaces, kept as written (identifiers, ARNs, enumerations AWS may extend).
    Text,
}

const PORT: FieldKind = FieldKind::Number {
    max: u16::MAX as u64,
};
const BYTE: FieldKind = FieldKind::Number {
    max: u8::MAX as u64,
};
const COUNT: FieldKind = FieldKind::Number { max: u64::MAX };

macro_rules! fields {
    ($($variant:ident => $name:literal, $version:literal, $kind:expr;)*) => {
        /// A flow-log field documented by AWS, named as in the `LogFormat` (`${srcaddr}`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field { $($variant,)* }

        impl Field {
            /// Every documented field, in documentation order.
            pub const ALL: &'static [Field] = &[$(Field::$variant,)*];

            /// The hyphenated name AWS uses in `LogFormat` strings and S3 header lines.
            pub const fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* }
            }

            /// The flow-log version that introduced the field (6 for transit gateway fields).
            pub const fn version(self) -> u8 {
                match self { $(Field::$variant => $version,)* }
            }

            /// How the field's values are read.
            pub const fn kind(self) -> FieldKind {
                match self { $(Field::$variant => $kind,)* }
            }

            /// Looks a field up by its hyphenated name; underscores (as in Parquet and Athena
            /// column names) are accepted in place of hyphens.
            pub fn from_name(name: &str) -> Option<Field> {
                if name.contains('_') {
                    return Field::from_name(&name.replace('_', "-"));
                }
                match name { $($name => Some(Field::$variant),)* _ => None }
            }
        }
    };
}

fields! {
    Version => "version", 2, BYTE;
    AccountId => "account-id", 2, FieldKind::Text;
    InterfaceId => "interface-id", 2, FieldKind::Text;
    SrcAddr => "srcaddr", 2, FieldKind::Address;
    DstAddr => "dstaddr", 2, FieldKind::Address;
    SrcPort => "srcport", 2, PORT;
    DstPort => "dstport", 2, PORT;
    Protocol => "protocol", 2, BYTE;
    Packets => "packets", 2, COUNT;
    Bytes => "bytes", 2, COUNT;
    Start => "start", 2, FieldKind::Timestamp;
    End => "end", 2, FieldKind::Timestamp;
    Action => "action", 2, FieldKind::Action;
    LogStatus => "log-status", 2, FieldKind::LogStatus;
    VpcId => "vpc-id", 3, FieldKind::Text;
    SubnetId => "subnet-id", 3, FieldKind::Text;
    InstanceId => "instance-id", 3, FieldKind::Text;
    TcpFlags => "tcp-flags", 3, COUNT;
    Type => "type", 3, FieldKind::Text;
    PktSrcAddr => "pkt-srcaddr", 3, FieldKind::Address;
    PktDstAddr => "pkt-dstaddr", 3, FieldKind::Address;
    Region => "region", 4, FieldKind::Text;
    AzId => "az-id", 4, FieldKind::Text;
    SublocationType => "sublocation-type", 4, FieldKind::Text;
    SublocationId => "sublocation-id", 4, FieldKind::Text;
    PktSrcAwsService => "pkt-src-aws-service", 5, FieldKind::Text;
    PktDstAwsService => "pkt-dst-aws-service", 5, FieldKind::Text;
    FlowDirection => "flow-direction", 5, FieldKind::Text;
    TrafficPath => "traffic-path", 5, BYTE;
    ResourceType => "resource-type", 6, FieldKind::Text;
    TgwId => "tgw-id", 6, FieldKind::Text;
    TgwAttachmentId => "tgw-attachment-id", 6, FieldKind::Text;
    TgwSrcVpcAccountId => "tgw-src-vpc-account-id", 6, FieldKind::Text;
    TgwDstVpcAccountId => "tgw-dst-vpc-account-id", 6, FieldKind::Text;
    TgwSrcVpcId => "tgw-src-vpc-id", 6, FieldKind::Text;
    TgwDstVpcId => "tgw-dst-vpc-id", 6, FieldKind::Text;
    TgwSrcSubnetId => "tgw-src-subnet-id", 6, FieldKind::Text;
    TgwDstSubnetId => "tgw-dst-subnet-id", 6, FieldKind::Text;
    TgwSrcEni => "tgw-src-eni", 6, FieldKind::Text;
    TgwDstEni => "tgw-dst-eni", 6, FieldKind::Text;
    TgwSrcAzId => "tgw-src-az-id", 6, FieldKind::Text;
    TgwDstAzId => "tgw-dst-az-id", 6, FieldKind::Text;
    TgwPairAttachmentId => "tgw-pair-attachment-id", 6, FieldKind::Text;
    PacketsLostNoRoute => "packets-lost-no-route", 6, COUNT;
    PacketsLostBlackhole => "packets-lost-blackhole", 6, COUNT;
    PacketsLostMtuExceeded => "packets-lost-mtu-exceeded", 6, COUNT;
    PacketsLostTtlExpired => "packets-lost-ttl-expired", 6, COUNT;
    EcsClusterArn => "ecs-cluster-arn", 7, FieldKind::Text;
    EcsClusterName => "ecs-cluster-name", 7, FieldKind::Text;
    EcsContainerInstanceArn => "ecs-container-instance-arn", 7, FieldKind::Text;
    EcsContainerInstanceId => "ecs-container-instance-id", 7, FieldKind::Text;
    EcsContainerId => "ecs-container-id", 7, FieldKind::Text;
    EcsSecondContainerId => "ecs-second-container-id", 7, FieldKind::Text;
    EcsServiceName => "ecs-service-name", 7, FieldKind::Text;
    EcsTaskDefinitionArn => "ecs-task-definition-arn", 7, FieldKind::Text;
    EcsTaskArn => "ecs-task-arn", 7, FieldKind::Text;
    EcsTaskId => "ecs-task-id", 7, FieldKind::Text;
    RejectReason => "reject-reason", 8, FieldKind::Text;
}

/// The longest interface id stored: AWS's are 21 bytes (`eni-` and 17 hex digits). The id
/// becomes part of a DynamoDB sort key (at most 1,024 bytes) and an attribute of counter
/// items (at most 400 KB each), so a longer one makes its line malformed.
pub const MAX_INTERFACE_ID_BYTES: u32 = 64;

/// The longest reject reason read; longer ones make their line malformed (and names
/// over 32 bytes are counted as `other`).
pub const MAX_REJECT_REASON_BYTES: u32 = 64;

impl Field {
    /// The longest value stored for a text field that becomes part of a stored key or
    /// attribute; `None` for fields only read, never stored.
    pub const fn max_text_bytes(self) -> Option<u32> {
        match self {
            Field::InterfaceId => Some(MAX_INTERFACE_ID_BYTES),
            // Reject reasons name counter attributes (`reason_<name>`); AWS's are short
            // words such as `BPA`.
            Field::RejectReason => Some(MAX_REJECT_REASON_BYTES),
            _ => None,
        }
    }

    /// Fields that only transit gateway flow logs carry: a format containing one describes
    /// transit gateway records, which have no security-group or NACL verdict to count.
    pub fn is_transit_gateway_only(self) -> bool {
        self.version() == 6
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The verdict recorded for the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Reject,
}

impl Action {
    /// The keyword as AWS writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Reject => "REJECT",
        }
    }
}

/// Whether the record carries traffic (`Ok`) or reports a capture gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStatus {
    /// Data is logged normally.
    Ok,
    /// No traffic to or from the interface during the aggregation interval.
    NoData,
    /// Records were skipped during the aggregation interval (capacity or internal error),
    /// so counts for that interface and interval are a lower bound.
    SkipData,
}

impl LogStatus {
    /// The keyword as AWS writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Ok => "OK",
            LogStatus::NoData => "NODATA",
            LogStatus::SkipData => "SKIPDATA",
        }
    }
}
