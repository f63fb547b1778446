//! The real engines the export tests talk to, started by the tests themselves: pmacct's
//! `nfacctd` (an IPFIX collector, decoding serveflow's elements with the primitives file under
//! `deploy/ipfix/`), tansu (a Kafka-protocol broker, in-memory storage) and a confluent-kafka
//! consumer (`tests/tools/kafka_consume.py`; Debian's kcat links librdkafka 2.0.2, which cannot
//! parse tansu's ApiVersions answer). Each runs in the test's own network namespace or, with
//! `ns` `None`, on the host; each is killed when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A UDP port on 127.0.0.1 nothing listens on (now).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_or(0, |a| a.port())
}

/// A TCP port on 127.0.0.1 nothing listens on (now).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_or(0, |a| a.port())
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// `$TANSU_BIN`, `.tools/bin/tansu` (where `cargo xtask setup` installs it) or `tansu` on PATH.
pub fn tansu_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Some(PathBuf::from(p));
    }
    let tools = repo().join(".tools/bin/tansu");
    if tools.is_file() {
        return Some(tools);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    })
}

/// The Python with confluent-kafka that `cargo xtask setup` installs, when it is there.
pub fn kafka_python() -> Option<PathBuf> {
    let python = repo().join(".tools/venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

/// The `export:` line of a run's stderr, and the counters it names (`sent 40 dropped 2 ...`).
pub struct ExportLine(pub String);

impl ExportLine {
    /// The line, if `stderr` has one.
    pub fn find(stderr: &str) -> Option<ExportLine> {
        stderr
            .lines()
            .find(|l| l.starts_with("export:"))
            .map(|l| ExportLine(l.to_owned()))
    }

    /// The number after the word `name` (`None`: not on the line, or not a number).
    pub fn count(&self, name: &str) -> Option<u64> {
        let mut words = self.0.split_whitespace();
        words.find(|w| *w == name)?;
        words.next()?.parse().ok()
    }
}

/// `program` as a command, inside network namespace `ns` when given.
pub fn command_in(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => crate::netns::nsenter(ns, program),
        None => Command::new(program),
    }
}

/// A child process killed on drop.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One collected IPFIX record: the flow and what serveflow said of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IpfixRow {
    /// Source address, as pmacct prints it.
    pub src: String,
    /// Destination address.
    pub dst: String,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// `tcp`, `udp` or the number.
    pub proto: String,
    /// serveflowLabel.
    pub label: String,
    /// serveflowStage.
    pub stage: String,
}

impl IpfixRow {
    /// The row a verdict line should produce.
    pub fn of_verdict(v: &serde_json::Value) -> IpfixRow {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let n = |k: &str| v[k].as_u64().unwrap_or_default();
        IpfixRow {
            src: s("src"),
            dst: s("dst"),
            sport: n("sport") as u16,
            dport: n("dport") as u16,
            proto: match n("proto") {
                6 => "tcp".into(),
                17 => "udp".into(),
                p => p.to_string(),
            },
            label: s("label"),
            stage: s("stage"),
        }
    }
}

/// nfacctd, printing every (5-tuple, verdict) it aggregates to a CSV each second.
pub struct Nfacctd {
    _child: Killed,
    out: PathBuf,
}

impl Nfacctd {
    /// Starts it on 127.0.0.1:`port` (in `ns` when given), writing under `dir`.
    pub fn start(ns: Option<&str>, dir: &Path, port: u16) -> anyhow::Result<Nfacctd> {
        let out = dir.join(format!("nfacctd-{port}.csv"));
        let conf = dir.join(format!("nfacctd-{port}.conf"));
        let primitives = repo().join("deploy/ipfix/pmacct-primitives.lst");
        std::fs::write(
            &conf,
            format!(
                "daemonize: false\n\
                 nfacctd_ip: 127.0.0.1\n\
                 nfacctd_port: {port}\n\
                 aggregate_primitives: {}\n\
                 plugins: print[sf]\n\
                 aggregate[sf]: src_host, dst_host, src_port, dst_port, proto, timestamp_start, \
                 sf_label, sf_stage, sf_model, sf_trigger\n\
                 print_output[sf]: csv\n\
                 print_output_file[sf]: {}\n\
                 print_output_file_append[sf]: true\n\
                 print_refresh_time[sf]: 1\n",
                primitives.display(),
                out.display()
            ),
        )?;
        let child = command_in(ns, Path::new("nfacctd"))
            .arg("-f")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nfacctd")?;
        // It binds within milliseconds; a datagram sent before would be lost with its records.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Nfacctd {
            _child: Killed(child),
            out,
        })
    }

    /// The records so far (header lines skipped), once `want` are there or 20 s have passed.
    pub fn rows(&self, want: usize) -> Vec<IpfixRow> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = self.read();
            if rows.len() >= want || Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn read(&self) -> Vec<IpfixRow> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut header: Vec<String> = Vec::new();
        let mut rows = Vec::new();
        for line in text.lines() {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.first() == Some(&"SRC_IP") {
                header = cells.iter().map(|c| c.to_string()).collect();
                continue;
            }
            let col = |name: &str| -> String {
                header
                    .iter()
                    .position(|h| h == name)
                    .and_then(|i| cells.get(i))
                    .map_or_else(String::new, |c| c.to_string())
            };
            rows.push(IpfixRow {
                src: col("SRC_IP"),
                dst: col("DST_IP"),
                sport: col("SRC_PORT").parse().unwrap_or_default(),
                dport: col("DST_PORT").parse().unwrap_or_default(),
                proto: col("PROTOCOL"),
                label: col("sf_label"),
                stage: col("sf_stage"),
            });
        }
        rows
    }
}

/// A tansu broker with in-memory storage and one topic, `verdicts`, of 3 partitions.
pub struct Tansu {
    child: Killed,
    ns: Option<String>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Tansu {
    /// Starts it on 127.0.0.1:`port` (in `ns` when given) and creates the topic.
    pub fn start(bin: &Path, ns: Option<&str>, port: u16) -> anyhow::Result<Tansu> {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = command_in(ns, bin)
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tansu")?;
        let child = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let created = command_in(ns, bin)
                .args(["topic", "create", "verdicts", "--partitions", "3"])
                .args(["--broker", &url])
                .output()?;
            if created.status.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "creating topic verdicts on tansu: {}",
                    String::from_utf8_lossy(&created.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Tansu {
            child,
            ns: ns.map(str::to_owned),
            port,
        })
    }

    /// Stops the broker now (the test of a broker gone mid-run).
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// Every message of the topic as (key, payload), read by `python` (see [`kafka_python`])
    /// once `want` are there or 30 s have passed.
    pub fn consume(
        &self,
        python: &Path,
        want: usize,
    ) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let script = repo().join("tests/tools/kafka_consume.py");
        loop {
            let out = command_in(self.ns.as_deref(), python)
                .arg(&script)
                .arg(format!("127.0.0.1:{}", self.port))
                .arg("verdicts")
                .output()
                .context("running the consumer")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut got = Vec::new();
            for line in text.lines().filter(|l| !l.is_empty()) {
                let (k, v) = line
                    .split_once('\t')
                    .with_context(|| format!("consumer line without a key: {line}"))?;
                got.push((k.to_string(), serde_json::from_str(v)?));
            }
            if got.len() >= want || Instant::now() > deadline {
                if !out.status.success() && got.len() < want {
                    bail!("consumer: {}", String::from_utf8_lossy(&out.stderr));
                }
                return Ok(got);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, reason = "tests fail loudly on purpose")]
    use super::ExportLine;

    #[test]
    fn export_line_counts_are_read_by_name() {
        let stderr = "flows: 42\nexport:    kafka://b/t  sent 40  dropped 2 (queue full 0, peer down 2)  undelivered 7  reconnects 1\n";
        let line = ExportLine::find(stderr).expect("the line");
        assert_eq!(line.count("sent"), Some(40));
        assert_eq!(line.count("dropped"), Some(2));
        assert_eq!(line.count("undelivered"), Some(7));
        assert_eq!(line.count("missing"), None);
        assert!(ExportLine::find("flows: 42\n").is_none());
    }
}
