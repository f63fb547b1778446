//! A flow's identity as every output names it: verdicts, extracted records, periodic rows and
//! the join with ground-truth labels all carry the same [`FlowId`], flattened into their rows.

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The 5-tuple with the initiator (the first packet's sender) as `src`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowId {
    /// Initiator address.
    pub src: IpAddr,
    /// Initiator port.
    pub sport: u16,
    /// Responder address.
    pub dst: IpAddr,
    /// Responder port.
    pub dport: u16,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
}

impl FlowId {
    /// The identity of a flow whose addresses are stored as the flow table keeps them (IPv4 as
    /// IPv4-mapped IPv6).
    pub fn new(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, proto: u8) -> Self {
        FlowId {
            src: ip(src),
            sport,
            dst: ip(dst),
            dport,
            proto,
        }
    }
}

impl std::fmt::Display for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.proto {
            6 => "tcp",
            17 => "udp",
            _ => "ip",
        };
        let end = |f: &mut std::fmt::Formatter<'_>, a: IpAddr, p: u16| match a {
            IpAddr::V4(v4) => write!(f, "{v4}:{p}"),
            IpAddr::V6(v6) => write!(f, "[{v6}]:{p}"),
        };
        write!(f, "{proto} ")?;
        end(f, self.src, self.sport)?;
        f.write_str(" -> ")?;
        end(f, self.dst, self.dport)
    }
}

/// Turns a stored address back into an `IpAddr` (IPv4-mapped addresses become IPv4).
pub fn ip(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;
    use serveflow_common::flow_key::ipv4_mapped;

    #[test]
    fn ids_name_ipv4_as_ipv4_and_flatten_into_rows() {
        let id = FlowId::new(
            ipv4_mapped([10, 0, 0, 1]),
            40000,
            ipv4_mapped([1, 1, 1, 1]),
            53,
            17,
        );
        assert_eq!(id.to_string(), "udp 10.0.0.1:40000 -> 1.1.1.1:53");
        #[derive(Serialize, Deserialize)]
        struct Row {
            #[serde(flatten)]
            flow: FlowId,
            label: String,
        }
        let text = serde_json::to_string(&Row {
            flow: id,
            label: "DNS".into(),
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"src":"10.0.0.1","sport":40000,"dst":"1.1.1.1","dport":53,"proto":17,"label":"DNS"}"#
        );
        let back: Row = serde_json::from_str(&text).unwrap();
        assert_eq!(back.flow, id);
        let v6 = FlowId::new(
            Ipv6Addr::LOCALHOST.octets(),
            1,
            Ipv6Addr::LOCALHOST.octets(),
            2,
            6,
        );
        assert_eq!(v6.to_string(), "tcp [::1]:1 -> [::1]:2");
    }
}
