//! Where verdicts are exported to, as operators write it: `--export URL` and `[export] to`.

use std::{fmt, path::PathBuf, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One export destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// IPFIX over UDP to `host:port` (templates re-sent on a timer).
    IpfixUdp(String),
    /// IPFIX over TCP to `host:port` (templates once per connection).
    IpfixTcp(String),
    /// JSON verdict lines to a Kafka topic.
    Kafka {
        /// Bootstrap brokers, `host:port` each.
        brokers: Vec<String>,
        /// The topic.
        topic: String,
    },
    /// JSON verdict lines appended to a file.
    File(PathBuf),
}

/// Why an export URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// No scheme, or one serveflow does not speak.
    #[error("export `{0}`: unknown scheme (expected ipfix+udp://HOST:PORT, ipfix+tcp://HOST:PORT, kafka://BROKER[,BROKER...]/TOPIC or file:PATH)")]
    Scheme(String),
    /// The address part is not `host:port`.
    #[error("export `{url}`: `{address}` is not HOST:PORT")]
    Address {
        /// The URL as given.
        url: String,
        /// The part that is wrong.
        address: String,
    },
    /// A Kafka URL without a topic.
    #[error("export `{0}`: no topic (kafka://BROKER[,BROKER...]/TOPIC)")]
    Topic(String),
    /// `file:` with no path.
    #[error("export `{0}`: no path (file:PATH)")]
    Path(String),
}

fn host_port(url: &str, address: &str) -> Result<String, TargetError> {
    let bad = || TargetError::Address {
        url: url.to_string(),
        address: address.to_string(),
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['/', ' ']) || port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(bad());
    }
    Ok(address.to_string())
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(url: &str) -> Result<Self, TargetError> {
        if let Some(address) = url.strip_prefix("ipfix+udp://") {
            return Ok(Target::IpfixUdp(host_port(url, address)?));
        }
        if let Some(address) = url.strip_prefix("ipfix+tcp://") {
            return Ok(Target::IpfixTcp(host_port(url, address)?));
        }
        if let Some(rest) = url.strip_prefix("kafka://") {
            let (brokers, topic) = rest
                .split_once('/')
                .filter(|(_, t)| !t.is_empty())
                .ok_or_else(|| TargetError::Topic(url.to_string()))?;
            if topic.contains(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c))) {
                return Err(TargetError::Topic(url.to_string()));
            }
            let brokers = brokers
                .split(',')
                .map(|b| host_port(url, b))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Target::Kafka {
                brokers,
                topic: topic.to_string(),
            });
        }
        if let Some(path) = url.strip_prefix("file:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(TargetError::Path(url.to_string()));
            }
            return Ok(Target::File(PathBuf::from(path)));
        }
        Err(TargetError::Scheme(url.to_string()))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::IpfixUdp(a) => write!(f, "ipfix+udp://{a}"),
            Target::IpfixTcp(a) => write!(f, "ipfix+tcp://{a}"),
            Target::Kafka { brokers, topic } => write!(f, "kafka://{}/{topic}", brokers.join(",")),
            Target::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn every_scheme_parses_and_prints_back() {
        for url in [
            "ipfix+udp://127.0.0.1:4739",
            "ipfix+tcp://collector.example:4739",
            "ipfix+udp://[::1]:4739",
            "kafka://b1:9092,b2:9092/serveflow.verdicts",
            "file:/tmp/v.jsonl",
        ] {
            let t: Target = url.parse().unwrap();
            assert_eq!(t.to_string(), url);
        }
        assert_eq!(
            "kafka://localhost:9092/v".parse::<Target>().unwrap(),
            Target::Kafka {
                brokers: vec!["localhost:9092".into()],
                topic: "v".into()
            }
        );
        assert_eq!(
            "file://x.jsonl".parse::<Target>().unwrap(),
            Target::File("x.jsonl".into())
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = |u: &str| u.parse::<Target>().unwrap_err().to_string();
        assert!(err("netflow://h:1").contains("unknown scheme"));
        assert!(err("127.0.0.1:4739").contains("unknown scheme"));
        assert!(err("ipfix+udp://host").contains("is not HOST:PORT"));
        assert!(err("ipfix+udp://host:0").contains("is not HOST:PORT"));
        assert!(err("ipfix+tcp://:4739").contains("is not HOST:PORT"));
        assert!(err("ipfix+tcp://h:99999").contains("is not HOST:PORT"));
        assert!(err("kafka://b:9092").contains("no topic"));
        assert!(err("kafka://b:9092/").contains("no topic"));
        assert!(err("kafka://b:9092/a/b").contains("no topic"));
        assert!(err("kafka://b:9092,/t").contains("is not HOST:PORT"));
        assert!(err("file:").contains("no path"));
    }
}
