//! Verdicts to a Kafka topic through librdkafka (the system's, linked dynamically): one JSON
//! verdict line per message, keyed by the flow's normalised key so a flow's records share a
//! partition; batched (linger) and compressed (lz4) by the client.
//!
//! librdkafka reconnects by itself and buffers while a broker is away; what it cannot hold
//! (its queue full) or deliver in time (`message.timeout.ms`) is counted, never waited for.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use rdkafka::{
    config::ClientConfig,
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext},
    ClientContext,
};
use serveflow_common::FlowKey;

use super::{sink::Transport, ExportError};
use crate::{flow::ip, verdict::Verdict};

/// How long start-up waits for a broker to answer.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts the deliveries librdkafka reports failed.
struct Deliveries {
    failed: Arc<AtomicU64>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Relaxed);
        }
    }
}

pub(crate) struct Kafka {
    target: String,
    topic: String,
    producer: BaseProducer<Deliveries>,
    failed: Arc<AtomicU64>,
    line: Vec<u8>,
    key: String,
}

impl Kafka {
    pub(crate) fn new(
        target: String,
        brokers: &[String],
        topic: &str,
    ) -> Result<Self, ExportError> {
        let failed = Arc::new(AtomicU64::new(0));
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers.join(","))
            .set("client.id", "serveflow")
            .set("compression.type", "lz4")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set("message.timeout.ms", "10000")
            .set("socket.keepalive.enable", "true")
            .create_with_context(Deliveries {
                failed: failed.clone(),
            })
            .map_err(|e| ExportError::io(&target, e.to_string()))?;
        Ok(Kafka {
            target,
            topic: topic.to_string(),
            producer,
            failed,
            line: Vec::with_capacity(512),
            key: String::with_capacity(96),
        })
    }
}

/// `proto lo-addr:port hi-addr:port`, the endpoints in the kernel key's order: the same for
/// both directions of a flow.
pub(crate) fn flow_key_text(key: &FlowKey, out: &mut String) {
    out.clear();
    let end = |out: &mut String, a: [u8; 16], p: u16| {
        let _ = match ip(a) {
            std::net::IpAddr::V4(v4) => write!(out, "{v4}:{p}"),
            std::net::IpAddr::V6(v6) => write!(out, "[{v6}]:{p}"),
        };
    };
    let _ = write!(out, "{} ", key.proto);
    end(out, key.addr_lo, key.port_lo);
    out.push(' ');
    end(out, key.addr_hi, key.port_hi);
}

impl Transport for Kafka {
    fn connect(&mut self) -> Result<(), ExportError> {
        let meta = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)
            .map_err(|e| ExportError::io(&self.target, format!("no broker answered: {e}")))?;
        match meta.topics().iter().find(|t| t.name() == self.topic) {
            Some(t) if t.error().is_none() => Ok(()),
            Some(t) => Err(ExportError::io(
                &self.target,
                format!("topic {}: {:?}", self.topic, t.error()),
            )),
            None => Err(ExportError::io(
                &self.target,
                format!("topic {} is unknown to the brokers", self.topic),
            )),
        }
    }

    fn send(&mut self, batch: &[Verdict]) -> Result<(), ExportError> {
        for v in batch {
            self.line.clear();
            if serde_json::to_writer(&mut self.line, v).is_err() {
                self.failed.fetch_add(1, Relaxed);
                continue;
            }
            flow_key_text(&v.key, &mut self.key);
            let record = BaseRecord::to(&self.topic)
                .key(self.key.as_str())
                .payload(self.line.as_slice());
            if self.producer.send(record).is_err() {
                // Its queue is full (a broker away for long) or the record is refused: counted.
                self.failed.fetch_add(1, Relaxed);
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn tick(&mut self) -> Result<(), ExportError> {
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn close(&mut self, timeout: Duration) -> Result<(), ExportError> {
        let flushed = self.producer.flush(timeout);
        let left = self.producer.in_flight_count();
        if left > 0 {
            self.failed.fetch_add(left as u64, Relaxed);
        }
        flushed.map_err(|e| ExportError::io(&self.target, format!("flushing: {e}")))
    }

    fn failed_deliveries(&mut self) -> u64 {
        self.failed.swap(0, Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use serveflow_common::flow_key::ipv4_mapped;

    #[test]
    fn keys_name_the_flow_the_same_from_both_ends() {
        let key = FlowKey {
            addr_lo: ipv4_mapped([10, 0, 0, 1]),
            addr_hi: ipv4_mapped([10, 0, 0, 2]),
            port_lo: 40000,
            port_hi: 443,
            proto: 6,
            pad: [0; 3],
        };
        let mut s = String::new();
        flow_key_text(&key, &mut s);
        assert_eq!(s, "6 10.0.0.1:40000 10.0.0.2:443");
        let v6 = FlowKey {
            addr_lo: Ipv6Addr::LOCALHOST.octets(),
            ..key
        };
        flow_key_text(&v6, &mut s);
        assert_eq!(s, "6 [::1]:40000 10.0.0.2:443");
    }

    #[test]
    fn a_broker_that_does_not_answer_fails_at_start() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_or(1, |a| a.port());
        let mut k = Kafka::new("k".into(), &[format!("127.0.0.1:{port}")], "t")
            .unwrap_or_else(|e| panic!("{e}"));
        let e = k.connect().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("no broker answered"), "{e}");
    }
}
