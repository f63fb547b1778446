//! Port features (`ports`): the transport, the server and client ports and their classes,
//! known from the first packet. A port is a weak name for a service, but it is free and
//! settles many protocols (NTP, DHCP, SSDP, ...) before any payload.
//!
//! Which end is the server is guessed, since a capture may start mid-flow with the server's
//! packet: a port below 1024 is a server's; otherwise, when one end uses an ephemeral port
//! (32768 and up, Linux's default range), the other end is the server; otherwise the
//! responder is.

/// Column names, in value order.
pub const NAMES: [&str; 7] = [
    "pt_proto",
    "pt_server",
    "pt_client",
    "pt_server_class",
    "pt_client_class",
    "pt_server_is_responder",
    "pt_initiator",
];

/// First port of the ephemeral range.
const EPHEMERAL: u16 = 32768;

/// 0: port 0, 1: system (1-1023), 2: registered (1024-32767), 3: ephemeral.
fn class(port: u16) -> f32 {
    match port {
        0 => 0.0,
        1..1024 => 1.0,
        1024..EPHEMERAL => 2.0,
        _ => 3.0,
    }
}

/// The flow's ports, as its first packet showed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortState {
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Initiator's port (the first packet's source).
    pub initiator: u16,
    /// Responder's port.
    pub responder: u16,
}

impl PortState {
    /// Whether the responder is the server (see the module doc).
    pub fn server_is_responder(&self) -> bool {
        let (i, r) = (self.initiator, self.responder);
        if r < 1024 {
            true
        } else if i < 1024 {
            false
        } else if i.max(r) >= EPHEMERAL {
            r <= i
        } else {
            true
        }
    }

    /// Appends the values in [`NAMES`] order.
    pub fn values(&self, out: &mut Vec<f32>) {
        let responder = self.server_is_responder();
        let (server, client) = if responder {
            (self.responder, self.initiator)
        } else {
            (self.initiator, self.responder)
        };
        out.extend_from_slice(&[
            f32::from(self.proto),
            f32::from(server),
            f32::from(client),
            class(server),
            class(client),
            f32::from(u8::from(responder)),
            f32::from(self.initiator),
        ]);
    }
}

/// The values of a flow whose ports are unknown (no packet seen).
pub fn absent(out: &mut Vec<f32>) {
    out.extend_from_slice(&[-1.0; NAMES.len()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(initiator: u16, responder: u16) -> f32 {
        let mut v = Vec::new();
        PortState {
            proto: 6,
            initiator,
            responder,
        }
        .values(&mut v);
        assert_eq!(v.len(), NAMES.len());
        v[1]
    }

    #[test]
    fn the_server_end_is_guessed_from_both_ports() {
        assert_eq!(server(51234, 443), 443.0, "client to server");
        assert_eq!(
            server(443, 51234),
            443.0,
            "capture started with the server's packet"
        );
        assert_eq!(
            server(8080, 40000),
            8080.0,
            "mid-flow, registered vs ephemeral"
        );
        assert_eq!(server(40000, 8080), 8080.0);
        assert_eq!(server(5353, 5353), 5353.0);
        assert_eq!(server(1900, 3000), 3000.0, "both registered: the responder");
        assert_eq!(class(0), 0.0);
        assert_eq!(class(53), 1.0);
        assert_eq!(class(8080), 2.0);
        assert_eq!(class(60000), 3.0);
    }
}
