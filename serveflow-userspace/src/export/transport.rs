//! The transports a sink drives: IPFIX over UDP or TCP, and JSON lines to a file.

use std::{
    fs::File,
    io::{BufWriter, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use super::{ipfix::Encoder, sink::Transport, ExportError};
use crate::verdict::Verdict;

/// How long a TCP connect or write may take before the peer counts as down.
const TCP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often UDP templates are re-sent (a collector started after serveflow learns them within
/// this time; nfacctd and nfcapd keep templates for far longer).
pub const TEMPLATE_EVERY: Duration = Duration::from_secs(10);
/// IPFIX message size over UDP: fits a 1500-byte MTU with IPv6 and UDP headers.
const UDP_MESSAGE: usize = 1400;
/// Over TCP messages may be larger; kept moderate so one record batch is a few segments.
const TCP_MESSAGE: usize = 16 * 1024;

fn export_time() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// Resolves `host:port`; an error names the target.
pub(crate) fn resolve(target: &str, address: &str) -> Result<SocketAddr, ExportError> {
    address
        .to_socket_addrs()
        .map_err(|e| ExportError::io(target, format!("resolving {address}: {e}")))?
        .next()
        .ok_or_else(|| ExportError::io(target, format!("{address} has no address")))
}

/// IPFIX over UDP: a connected socket, so a collector port that refuses shows up as send
/// errors (ICMP port unreachable) and the sink counts drops.
pub(crate) struct IpfixUdp {
    target: String,
    address: String,
    socket: Option<UdpSocket>,
    encoder: Encoder,
    templates_at: Instant,
}

impl IpfixUdp {
    pub(crate) fn new(target: String, address: String, domain: u32) -> Self {
        IpfixUdp {
            target,
            address,
            socket: None,
            encoder: Encoder::new(domain, UDP_MESSAGE),
            templates_at: Instant::now(),
        }
    }

    fn send_templates(&mut self) -> Result<(), ExportError> {
        let msg = self.encoder.templates(export_time());
        self.templates_at = Instant::now();
        self.datagram(&msg)
    }

    fn datagram(&self, msg: &[u8]) -> Result<(), ExportError> {
        let socket = self
            .socket
            .as_ref()
            .ok_or_else(|| ExportError::io(&self.target, "not connected"))?;
        socket
            .send(msg)
            .map(|_| ())
            .map_err(|e| ExportError::io(&self.target, e.to_string()))
    }
}

impl Transport for IpfixUdp {
    fn connect(&mut self) -> Result<(), ExportError> {
        let peer = resolve(&self.target, &self.address)?;
        let local: SocketAddr = if peer.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .and_then(|s| s.connect(peer).map(|()| s))
            .map_err(|e| ExportError::io(&self.target, e.to_string()))?;
        self.socket = Some(socket);
        self.send_templates()
    }

    fn send(&mut self, batch: &[Verdict]) -> Result<(), ExportError> {
        let mut result = Ok(());
        let (socket, target) = (&self.socket, &self.target);
        self.encoder.data(batch, export_time(), &mut |msg| {
            if result.is_ok() {
                result = match socket {
                    Some(s) => s.send(msg).map(|_| ()).map_err(|e| e.to_string()),
                    None => Err("not connected".into()),
                };
            }
        });
        result.map_err(|e| ExportError::io(target, e))
    }

    fn tick(&mut self) -> Result<(), ExportError> {
        if self.templates_at.elapsed() >= TEMPLATE_EVERY {
            self.send_templates()?;
        }
        Ok(())
    }

    fn close(&mut self, _: Duration) -> Result<(), ExportError> {
        Ok(())
    }
}

/// IPFIX over TCP: templates once per connection, messages written as they are encoded.
pub(crate) struct IpfixTcp {
    target: String,
    address: String,
    stream: Option<BufWriter<TcpStream>>,
    encoder: Encoder,
    domain: u32,
}

impl IpfixTcp {
    pub(crate) fn new(target: String, address: String, domain: u32) -> Self {
        IpfixTcp {
            target,
            address,
            stream: None,
            encoder: Encoder::new(domain, TCP_MESSAGE),
            domain,
        }
    }

    fn stream(&mut self) -> Result<&mut BufWriter<TcpStream>, ExportError> {
        self.stream
            .as_mut()
            .ok_or_else(|| ExportError::io(&self.target, "not connected"))
    }
}

impl Transport for IpfixTcp {
    fn connect(&mut self) -> Result<(), ExportError> {
        self.stream = None;
        let peer = resolve(&self.target, &self.address)?;
        let stream = TcpStream::connect_timeout(&peer, TCP_TIMEOUT)
            .and_then(|s| {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(TCP_TIMEOUT))?;
                Ok(s)
            })
            .map_err(|e| ExportError::io(&self.target, format!("connecting: {e}")))?;
        // Sequence numbers start again on a new session (RFC 7011 section 10.4.2).
        self.encoder = Encoder::new(self.domain, TCP_MESSAGE);
        let templates = self.encoder.templates(export_time());
        let target = self.target.clone();
        let mut w = BufWriter::with_capacity(64 * 1024, stream);
        w.write_all(&templates)
            .map_err(|e| ExportError::io(&target, e.to_string()))?;
        self.stream = Some(w);
        Ok(())
    }

    fn send(&mut self, batch: &[Verdict]) -> Result<(), ExportError> {
        let target = self.target.clone();
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| ExportError::io(&target, "not connected"))?;
        let mut result = Ok(());
        self.encoder.data(batch, export_time(), &mut |msg| {
            if result.is_ok() {
                result = stream.write_all(msg);
            }
        });
        result.map_err(|e| {
            self.stream = None;
            ExportError::io(&target, e.to_string())
        })
    }

    fn tick(&mut self) -> Result<(), ExportError> {
        let target = self.target.clone();
        let flushed = self.stream()?.flush();
        flushed.map_err(|e| {
            self.stream = None;
            ExportError::io(&target, e.to_string())
        })
    }

    fn close(&mut self, _: Duration) -> Result<(), ExportError> {
        let flushed = self.tick();
        self.stream = None;
        flushed
    }
}

/// JSON verdict lines appended to a file, flushed every tick.
pub(crate) struct JsonFile {
    target: String,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    opened: bool,
}

impl JsonFile {
    pub(crate) fn new(target: String, path: PathBuf) -> Self {
        JsonFile {
            target,
            path,
            out: None,
            opened: false,
        }
    }
}

impl Transport for JsonFile {
    fn connect(&mut self) -> Result<(), ExportError> {
        // A run starts the file afresh (as `--out` does); reopening after an error appends.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.opened)
            .truncate(!self.opened)
            .open(&self.path)
            .map_err(|e| ExportError::io(&self.target, e.to_string()))?;
        self.out = Some(BufWriter::with_capacity(256 * 1024, f));
        self.opened = true;
        Ok(())
    }

    fn send(&mut self, batch: &[Verdict]) -> Result<(), ExportError> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| ExportError::io(&self.target, "not open"))?;
        let mut line = Vec::with_capacity(512);
        for v in batch {
            line.clear();
            serde_json::to_writer(&mut line, v)
                .map_err(|e| ExportError::io(&self.target, e.to_string()))?;
            line.push(b'\n');
            out.write_all(&line)
                .map_err(|e| ExportError::io(&self.target, e.to_string()))?;
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), ExportError> {
        match &mut self.out {
            Some(out) => out
                .flush()
                .map_err(|e| ExportError::io(&self.target, e.to_string())),
            None => Ok(()),
        }
    }

    fn close(&mut self, _: Duration) -> Result<(), ExportError> {
        self.tick()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use std::{io::Read, net::TcpListener};

    use super::*;

    #[test]
    fn udp_sends_templates_first_then_data() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let addr = rx.local_addr().unwrap().to_string();
        let mut t = IpfixUdp::new("t".into(), addr, 1);
        t.connect().unwrap();
        t.send(&[Verdict::sample()]).unwrap();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(u16::from_be_bytes([buf[16], buf[17]]), 2, "a template set");
        assert_eq!(usize::from(u16::from_be_bytes([buf[2], buf[3]])), n);
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(u16::from_be_bytes([buf[16], buf[17]]), 256, "IPv4 data set");
        assert!(n > 40);
    }

    #[test]
    fn tcp_refused_is_an_error_and_a_live_peer_gets_the_stream() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let mut t = IpfixTcp::new("t".into(), addr.clone(), 1);
        t.connect().unwrap();
        t.send(&[Verdict::sample(), Verdict::sample()]).unwrap();
        t.close(Duration::from_secs(1)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let first = usize::from(u16::from_be_bytes([got[2], got[3]]));
        assert_eq!(u16::from_be_bytes([got[first], got[first + 1]]), 10);
        drop(l);
        let mut t = IpfixTcp::new("t".into(), addr, 1);
        assert!(t.connect().unwrap_err().to_string().contains("connecting"));
    }

    #[test]
    fn file_lines_are_verdicts() {
        let dir = std::env::temp_dir().join(format!("sf-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.jsonl");
        let mut t = JsonFile::new("f".into(), path.clone());
        t.connect().unwrap();
        t.send(&[Verdict::sample(), Verdict::sample()]).unwrap();
        t.close(Duration::ZERO).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["label"], "a");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
