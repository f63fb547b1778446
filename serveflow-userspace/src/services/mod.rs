//! Mapping flows to named services, as Traffic Refinery does: by the server name the flow
//! carries (TLS SNI, QUIC SNI, HTTP Host), by DNS answers seen earlier on the wire for its server
//! address, and by user-given IP prefixes (longest match). Services and their domain patterns
//! come from a TOML file:
//!
//! ```toml
//! [[service]]
//! name = "youtube"
//! domains = ["youtube.com", "*.youtube.com", "*.googlevideo.com"]
//! prefixes = ["208.65.152.0/22", "2620:0:10e0::/48"]
//! ```
//!
//! `*.example.com` matches any name under example.com (not example.com itself); a pattern
//! without `*` matches that name only.

pub mod dns;
pub mod names;
pub(crate) mod prefix;
pub mod quic;
pub mod tls;

use std::{collections::HashMap, net::IpAddr, path::Path};

use serde::Deserialize;

use dns::DnsCache;
use prefix::PrefixTable;

/// A services file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// Not valid TOML of the expected shape.
    #[error("{path}: {reason}")]
    Parse {
        /// File.
        path: String,
        /// What is wrong, with line and column.
        reason: String,
    },
    /// A field value is wrong.
    #[error("{path}: service {service:?}: {reason}")]
    Field {
        /// File.
        path: String,
        /// Service name.
        service: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesFile {
    #[serde(default)]
    service: Vec<ServiceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    name: String,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
}

/// Where a flow's service came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceSource {
    /// TLS SNI or HTTP Host of the flow itself.
    ServerName,
    /// A DNS answer for the server's address.
    Dns,
    /// A configured IP prefix.
    Prefix,
}

/// Configured services plus the DNS cache built from traffic.
#[derive(Debug, Default)]
pub struct ServiceMap {
    names: Vec<String>,
    exact: HashMap<String, usize>,
    /// (suffix with its leading dot, service)
    wildcards: Vec<(String, usize)>,
    prefixes: PrefixTable,
    /// DNS answers seen so far.
    pub dns: DnsCache,
}

impl ServiceMap {
    /// Loads a services file.
    pub fn load(path: &Path) -> Result<Self, ServicesError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ServicesError::Read {
            path: p.clone(),
            source,
        })?;
        Self::from_toml(&text, &p)
    }

    /// Parses services from TOML text (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ServicesError> {
        let file: ServicesFile = toml::from_str(text).map_err(|e| ServicesError::Parse {
            path: origin.to_owned(),
            reason: e.to_string(),
        })?;
        let mut map = ServiceMap::default();
        for entry in file.service {
            let field = |reason: String| ServicesError::Field {
                path: origin.to_owned(),
                service: entry.name.clone(),
                reason,
            };
            if entry.name.trim().is_empty() {
                return Err(field("name is empty".into()));
            }
            let id = map.names.len();
            map.names.push(entry.name.clone());
            for domain in &entry.domains {
                let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
                match d.strip_prefix("*.") {
                    Some(rest) if !rest.is_empty() && !rest.contains('*') => {
                        map.wildcards.push((format!(".{rest}"), id))
                    }
                    None if !d.is_empty() && !d.contains('*') => {
                        map.exact.insert(d, id);
                    }
                    _ => {
                        return Err(field(format!(
                            "domain {domain:?}: use a name (example.com) or a leading wildcard (*.example.com)"
                        )))
                    }
                }
            }
            for prefix in &entry.prefixes {
                map.prefixes
                    .insert(prefix, id)
                    .map_err(|reason| field(format!("prefix {prefix:?}: {reason}")))?;
            }
        }
        // Longest suffix first, so *.a.example.com beats *.example.com.
        map.wildcards
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Ok(map)
    }

    /// Service names, by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The service a name belongs to.
    pub fn by_name(&self, name: &str) -> Option<usize> {
        if let Some(id) = self.exact.get(name) {
            return Some(*id);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| name.ends_with(suffix.as_str()))
            .map(|(_, id)| *id)
    }

    /// Classifies a flow: its own server name first, then a DNS answer for the server address,
    /// then the prefixes. Returns the service id (if any), the name that decided (if any) and
    /// the source.
    pub fn classify<'a>(
        &'a self,
        server_name: Option<&'a str>,
        server: IpAddr,
        now_ns: u64,
    ) -> (Option<usize>, Option<&'a str>, Option<ServiceSource>) {
        if let Some(name) = server_name {
            if let Some(id) = self.by_name(name) {
                return (Some(id), Some(name), Some(ServiceSource::ServerName));
            }
        }
        let dns_name = self.dns.lookup(&server, now_ns);
        if let Some(name) = dns_name {
            if let Some(id) = self.by_name(name) {
                return (Some(id), Some(name), Some(ServiceSource::Dns));
            }
        }
        if let Some(id) = self.prefixes.lookup(server) {
            return (
                Some(id),
                server_name.or(dns_name),
                Some(ServiceSource::Prefix),
            );
        }
        (None, server_name.or(dns_name), None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    const FILE: &str = r#"
        [[service]]
        name = "video"
        domains = ["*.googlevideo.com", "youtube.com", "*.youtube.com"]
        prefixes = ["208.65.152.0/22"]

        [[service]]
        name = "music"
        domains = ["*.music.youtube.com"]
        prefixes = ["208.65.153.0/24", "2001:db8::/32"]
    "#;

    #[test]
    fn names_wildcards_and_longest_prefix() {
        let map = ServiceMap::from_toml(FILE, "test").unwrap();
        let id = |n: &str| map.by_name(n).map(|i| map.names()[i].as_str());
        assert_eq!(id("youtube.com"), Some("video"));
        assert_eq!(id("www.youtube.com"), Some("video"));
        assert_eq!(
            id("a.music.youtube.com"),
            Some("music"),
            "longest wildcard wins"
        );
        assert_eq!(id("googlevideo.com"), None, "*.x does not match x");
        assert_eq!(id("notyoutube.com"), None);
        let svc = |ip: [u8; 4]| map.classify(None, IpAddr::from(ip), 0).0;
        assert_eq!(svc([208, 65, 153, 9]), Some(1), "/24 beats /22");
        assert_eq!(svc([208, 65, 152, 9]), Some(0));
        assert_eq!(svc([8, 8, 8, 8]), None);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(map.classify(None, v6, 0).0, Some(1));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let err = |text: &str| {
            ServiceMap::from_toml(text, "svc.toml")
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("[[service]]\nname = \"a\"\ndomains = [\"a.*.com\"]").contains("leading wildcard")
        );
        assert!(
            err("[[service]]\nname = \"a\"\nprefixes = [\"10.0.0.0/33\"]").contains("10.0.0.0/33")
        );
        assert!(err("[[service]]\nname = \"a\"\ncolour = 1").contains("unknown field"));
        assert!(err("[[service]]\nname = \"\"").contains("empty"));
    }
}
