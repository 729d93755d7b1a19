//! A parsed record: [`FlowRecord`], which borrows its line and the parser's slots, and the
//! values it gives ([`FieldValue`]); also its JSON form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::fields::{Action, Field, LogStatus};
use super::format::FlowFormat;

/// A parsed value, stored without borrowing so the parser can reuse its buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Slot {
    Absent,
    Number(u64),
    /// IPv4 as its 32-bit value: building an `IpAddr` in the hot loop costs a
    /// store-forwarding stall on every address.
    Ipv4(u32),
    Ipv6(Ipv6Addr),
    Text {
        start: u32,
        end: u32,
    },
    Action(Action),
    LogStatus(LogStatus),
}

/// A value of one field of a record. Absent values (`-`) are `None` where this appears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Number(u64),
    Address(IpAddr),
    Text(&'a str),
    Action(Action),
    LogStatus(LogStatus),
}

/// An address as its bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AddressBits {
    V4(u32),
    V6(u128),
}

/// One parsed record, borrowing the line it came from and the parser's buffer.
#[derive(Clone, Copy, Debug)]
pub struct FlowRecord<'a> {
    pub(super) format: &'a FlowFormat,
    pub(super) line: &'a str,
    pub(super) slots: &'a [Slot],
}

impl<'a> FlowRecord<'a> {
    /// The format the record was read with.
    #[inline(always)]
    pub fn format(&self) -> &'a FlowFormat {
        self.format
    }

    /// The value of a documented field; `None` when the format lacks it or the record
    /// has `-` there.
    pub fn value(&self, field: Field) -> Option<FieldValue<'a>> {
        self.format
            .position(field)
            .and_then(|position| self.column_value(position))
    }

    /// The value in a column (by position), documented or not.
    pub fn column_value(&self, position: usize) -> Option<FieldValue<'a>> {
        match *self.slots.get(position)? {
            Slot::Absent => None,
            Slot::Number(value) => Some(FieldValue::Number(value)),
            Slot::Ipv4(bits) => Some(FieldValue::Address(IpAddr::V4(Ipv4Addr::from_bits(bits)))),
            Slot::Ipv6(v6) => Some(FieldValue::Address(IpAddr::V6(v6))),
            Slot::Text { start, end } => {
                Some(FieldValue::Text(&self.line[start as usize..end as usize]))
            }
            Slot::Action(action) => Some(FieldValue::Action(action)),
            Slot::LogStatus(status) => Some(FieldValue::LogStatus(status)),
        }
    }

    /// The tally reads a dozen fields of every REJECT through here: kept inline.
    #[inline(always)]
    fn slot(&self, field: Field) -> &Slot {
        match self.format.position(field) {
            Some(position) => self.slots.get(position).unwrap_or(&Slot::Absent),
            None => &Slot::Absent,
        }
    }

    /// A numeric field (ports, protocol, counters, timestamps in seconds).
    #[inline(always)]
    pub fn number(&self, field: Field) -> Option<u64> {
        match *self.slot(field) {
            Slot::Number(value) => Some(value),
            _ => None,
        }
    }

    /// An address field (`srcaddr`, `dstaddr`, `pkt-srcaddr`, `pkt-dstaddr`).
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:198.51.100.7`, as dual-stack sockets report
    /// IPv4 peers) is the IPv4 address it maps: one source, one row, one allowlist entry.
    pub fn address(&self, field: Field) -> Option<IpAddr> {
        match *self.slot(field) {
            Slot::Ipv4(bits) => Some(IpAddr::V4(Ipv4Addr::from_bits(bits))),
            Slot::Ipv6(v6) => Some(IpAddr::V6(v6).to_canonical()),
            _ => None,
        }
    }

    /// An address field as its bits, without building an [`IpAddr`]: what the tally keys
    /// on. IPv4-mapped IPv6 addresses come out as IPv4, as from [`FlowRecord::address`].
    #[inline(always)]
    pub(crate) fn address_bits(&self, field: Field) -> Option<AddressBits> {
        match *self.slot(field) {
            Slot::Ipv4(bits) => Some(AddressBits::V4(bits)),
            Slot::Ipv6(v6) => Some(match v6.to_ipv4_mapped() {
                Some(v4) => AddressBits::V4(v4.to_bits()),
                None => AddressBits::V6(v6.to_bits()),
            }),
            _ => None,
        }
    }

    /// A text field (identifiers and enumerations), as written.
    #[inline(always)]
    pub fn text(&self, field: Field) -> Option<&'a str> {
        match *self.slot(field) {
            Slot::Text { start, end } => Some(&self.line[start as usize..end as usize]),
            _ => None,
        }
    }

    /// `ACCEPT` or `REJECT`; `None` for NODATA/SKIPDATA records and formats without `action`.
    #[inline(always)]
    pub fn action(&self) -> Option<Action> {
        match *self.slot(Field::Action) {
            Slot::Action(action) => Some(action),
            _ => None,
        }
    }

    /// The record's log status; `None` when the format lacks `log-status`.
    #[inline(always)]
    pub fn log_status(&self) -> Option<LogStatus> {
        match *self.slot(Field::LogStatus) {
            Slot::LogStatus(status) => Some(status),
            _ => None,
        }
    }

    /// Whether the record describes traffic (not a NODATA or SKIPDATA gap report).
    pub fn has_traffic(&self) -> bool {
        matches!(self.log_status(), None | Some(LogStatus::Ok))
    }
}

impl Serialize for FlowRecord<'_> {
    /// A JSON object keyed by the hyphenated field names; absent values are omitted and
    /// numbers are JSON numbers.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (position, column) in self.format.columns.iter().enumerate() {
            match self.column_value(position) {
                None => {}
                Some(FieldValue::Number(value)) => map.serialize_entry(column.name(), &value)?,
                Some(FieldValue::Address(addr)) => map.serialize_entry(column.name(), &addr)?,
                Some(FieldValue::Text(text)) => map.serialize_entry(column.name(), text)?,
                Some(FieldValue::Action(action)) => {
                    map.serialize_entry(column.name(), action.as_str())?
                }
                Some(FieldValue::LogStatus(status)) => {
                    map.serialize_entry(column.name(), status.as_str())?
                }
            }
        }
        map.end()
    }
}
