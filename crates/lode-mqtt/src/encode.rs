//! Packets to bytes.
//!
//! The body of each packet is written by one generic function over [`Sink`]:
//! run with a byte counter it yields the remaining length, run with a
//! `BytesMut` it writes. Measuring and writing therefore cannot disagree, and
//! [`encode`] reserves the exact size once before writing without any
//! intermediate buffer (the broker encodes a PUBLISH per subscriber).

use bytes::{BufMut, BytesMut};

use crate::properties as props;
use crate::{Packet, ProtocolVersion, PubResp, QoS, ReasonCode, UserProperty};

/// Where encoded bytes go: either counted or written.
pub(crate) trait Sink {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn bytes(&mut self, v: &[u8]);

    /// A Variable Byte Integer (values above 268,435,455 take a fifth byte,
    /// which no peer accepts; callers keep packets within protocol limits).
    fn varint(&mut self, mut v: u32) {
        loop {
            let mut b = (v & 0x7F) as u8;
            v >>= 7;
            if v != 0 {
                b |= 0x80;
            }
            self.u8(b);
            if v == 0 {
                return;
            }
        }
    }

    /// Two-byte length prefix then the bytes. Lengths above 65,535 cannot be
    /// represented; the prefix is truncated, so callers must respect the limit.
    fn binary(&mut self, v: &[u8]) {
        self.u16(v.len() as u16);
        self.bytes(v);
    }
}

/// Counts bytes instead of writing them.
pub(crate) struct Len(pub(crate) usize);

impl Sink for Len {
    fn u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0 += v.len();
    }
    fn varint(&mut self, v: u32) {
        self.0 += varint_len(v);
    }
}

impl Sink for BytesMut {
    fn u8(&mut self, v: u8) {
        self.put_u8(v);
    }
    fn u16(&mut self, v: u16) {
        self.put_u16(v);
    }
    fn u32(&mut self, v: u32) {
        self.put_u32(v);
    }
    fn bytes(&mut self, v: &[u8]) {
        self.put_slice(v);
    }
}

pub(crate) fn varint_len(v: u32) -> usize {
    match v {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0xFFF_FFFF => 4,
        _ => 5,
    }
}

/// Writes a property block: its length prefix, then the properties.
///
/// The body is expanded twice, once against a byte counter and once against
/// the real sink; a closure cannot be generic over both sink types.
macro_rules! props_block {
    ($s:expr, |$p:ident| $body:expr) => {{
        let mut len = Len(0);
        {
            let $p = &mut len;
            $body;
        }
        $s.varint(u32::try_from(len.0).unwrap_or(u32::MAX));
        {
            let $p = &mut *$s;
            $body;
        }
    }};
}

/// Appends the wire form of `packet` for `version` to `buf`.
///
/// A CONNECT is encoded for its own `protocol` field, whatever `version` says.
/// AUTH does not exist in 3.1.1: encoding it for 3.1.1 appends nothing.
/// Strings longer than 65,535 bytes and packets above the protocol's 256 MiB
/// limit cannot be represented; keeping within those limits is up to the caller.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    let Some(first) = first_byte(packet, version) else {
        return;
    };
    let rem = remaining_len(packet, version);
    buf.reserve(1 + varint_len(rem) + rem as usize);
    buf.put_u8(first);
    buf.varint(rem);
    body(packet, version, buf);
}

/// The number of bytes [`encode`] would append.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    if first_byte(packet, version).is_none() {
        return 0;
    }
    let rem = remaining_len(packet, version);
    1 + varint_len(rem) + rem as usize
}

fn remaining_len(packet: &Packet, version: ProtocolVersion) -> u32 {
    let mut len = Len(0);
    body(packet, version, &mut len);
    // Saturating: an oversized packet is out of contract anyway (see `encode`).
    u32::try_from(len.0).unwrap_or(u32::MAX)
}

/// Packet type and flags, or `None` when the packet has no form in `version`.
fn first_byte(packet: &Packet, version: ProtocolVersion) -> Option<u8> {
    Some(match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => 0x30 | u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain),
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]: reserved flags 0b0010.
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) if !version.is_v5() => return None,
        Packet::Auth(_) => 0xF0,
    })
}

fn body<S: Sink>(packet: &Packet, version: ProtocolVersion, s: &mut S) {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => {
            let (name, level): (&[u8], u8) = match c.protocol {
                ProtocolVersion::V310 => (b"MQIsdp", 3),
                ProtocolVersion::V311 => (b"MQTT", 4),
                ProtocolVersion::V5 => (b"MQTT", 5),
            };
            let v5 = c.protocol.is_v5();
            s.binary(name);
            s.u8(level);
            let mut flags = u8::from(c.clean_start) << 1;
            if let Some(w) = &c.will {
                flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
            }
            flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
            s.u8(flags);
            s.u16(c.keep_alive);
            if v5 {
                props_block!(s, |s| props::put_connect(s, &c.properties));
            }
            s.binary(c.client_id.as_bytes());
            if let Some(w) = &c.will {
                if v5 {
                    props_block!(s, |s| props::put_will(s, &w.properties));
                }
                s.binary(w.topic.as_bytes());
                s.binary(&w.payload);
            }
            if let Some(u) = &c.username {
                s.binary(u.as_bytes());
            }
            if let Some(p) = &c.password {
                s.binary(p);
            }
        }
        Packet::ConnAck(a) => {
            s.u8(u8::from(a.session_present));
            if v5 {
                s.u8(a.code.to_u8());
                props_block!(s, |s| props::put_connack(s, &a.properties));
            } else {
                s.u8(a.code.to_v3_connack());
            }
        }
        Packet::Publish(p) => {
            s.binary(&p.topic);
            if p.qos != QoS::AtMostOnce {
                // The model says `packet_id` is present iff QoS > 0; a missing
                // one is written as 0, which every receiver rejects.
                s.u16(p.packet_id.unwrap_or(0));
            }
            if v5 {
                props_block!(s, |s| props::put_publish(s, &p.properties));
            }
            s.bytes(&p.payload);
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            pub_resp(s, r, v5);
        }
        Packet::Subscribe(sub) => {
            s.u16(sub.packet_id);
            if v5 {
                props_block!(s, |s| {
                    if let Some(id) = sub.subscription_identifier {
                        props::put_varint(s, props::SUBSCRIPTION_IDENTIFIER, id);
                    }
                    props::put_user(s, &sub.user_properties);
                });
            }
            for (filter, o) in &sub.filters {
                s.binary(filter.as_bytes());
                let mut b = o.qos as u8;
                if v5 {
                    b |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling as u8) << 4;
                }
                s.u8(b);
            }
        }
        Packet::SubAck(a) => {
            s.u16(a.packet_id);
            if v5 {
                ack_props(s, a.reason_string.as_deref(), &a.user_properties);
                for c in &a.codes {
                    s.u8(c.to_u8());
                }
            } else {
                for c in &a.codes {
                    s.u8(match c {
                        ReasonCode::Success => 0x00,
                        ReasonCode::GrantedQoS1 => 0x01,
                        ReasonCode::GrantedQoS2 => 0x02,
                        // 3.1.1 has a single failure code.
                        _ => 0x80,
                    });
                }
            }
        }
        Packet::Unsubscribe(u) => {
            s.u16(u.packet_id);
            if v5 {
                props_block!(s, |s| props::put_user(s, &u.user_properties));
            }
            for f in &u.filters {
                s.binary(f.as_bytes());
            }
        }
        Packet::UnsubAck(a) => {
            s.u16(a.packet_id);
            if v5 {
                ack_props(s, a.reason_string.as_deref(), &a.user_properties);
                for c in &a.codes {
                    s.u8(c.to_u8());
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if !v5 {
                return;
            }
            let no_props = d.session_expiry_interval.is_none()
                && d.reason_string.is_none()
                && d.server_reference.is_none()
                && d.user_properties.is_empty();
            // Short forms [MQTT-3.14.2.1]: remaining length 0 means Success
            // and no properties; 1 means a reason code and no properties.
            if d.code == ReasonCode::Success && no_props {
                return;
            }
            s.u8(d.code.to_u8());
            if !no_props {
                props_block!(s, |s| {
                    props::put_u32(s, props::SESSION_EXPIRY_INTERVAL, d.session_expiry_interval);
                    props::put_str(s, props::REASON_STRING, d.reason_string.as_deref());
                    props::put_str(s, props::SERVER_REFERENCE, d.server_reference.as_deref());
                    props::put_user(s, &d.user_properties);
                });
            }
        }
        Packet::Auth(a) => {
            if !v5 {
                return;
            }
            let no_props = a.authentication_method.is_none()
                && a.authentication_data.is_none()
                && a.reason_string.is_none()
                && a.user_properties.is_empty();
            if a.code == ReasonCode::Success && no_props {
                return;
            }
            s.u8(a.code.to_u8());
            props_block!(s, |s| {
                props::put_str(
                    s,
                    props::AUTHENTICATION_METHOD,
                    a.authentication_method.as_deref(),
                );
                props::put_bin(
                    s,
                    props::AUTHENTICATION_DATA,
                    a.authentication_data.as_ref(),
                );
                props::put_str(s, props::REASON_STRING, a.reason_string.as_deref());
                props::put_user(s, &a.user_properties);
            });
        }
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP.
fn pub_resp<S: Sink>(s: &mut S, r: &PubResp, v5: bool) {
    s.u16(r.packet_id);
    if !v5 {
        return;
    }
    let no_props = r.reason_string.is_none() && r.user_properties.is_empty();
    // [MQTT-3.4.2.1]: a remaining length of 2 means Success without properties.
    // Many clients only understand this short form, so it is always used.
    if r.code == ReasonCode::Success && no_props {
        return;
    }
    s.u8(r.code.to_u8());
    // A remaining length of 3 means "no property length": saves a byte.
    if !no_props {
        ack_props(s, r.reason_string.as_deref(), &r.user_properties);
    }
}

fn ack_props<S: Sink>(s: &mut S, reason: Option<&str>, users: &[UserProperty]) {
    props_block!(s, |s| props::put_ack(s, reason, users));
}
