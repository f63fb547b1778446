//! Real protocol exchanges on a [`SpanBed`]: Debian's servers (dnsmasq, chronyd, sshd,
//! redis-server, Python's HTTP/HTTPS server and a syslog sink) in the servers' namespace, real
//! clients (curl, chronyd, ssh, redis-cli, logger) in the clients', and the score of
//! serveflow's verdicts against what each client did.
//!
//! Every site has its own address, which dnsmasq gives out for its name, so a flow's server
//! address says which site the client asked for; a DNS flow is matched by the name it asked
//! about. A verdict is **right** when it names the site's service (nDPI's application: `Google`
//! for `TLS.Google`) or, failing that, the protocol (`TLS`, `DNS`, `HTTP`): nDPI reports both,
//! and a model that has no class for a service can at best say the protocol. SSH has no class
//! in the bundled models (too few flows in the data), so `other` is its right answer.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::{engines::Killed, span::SpanBed};

/// The sites: server name and the service nDPI names for it (`None`: none, only the protocol).
pub const SITES: [(&str, Option<&str>); 9] = [
    ("www.google.com", Some("Google")),
    ("www.youtube.com", Some("YouTube")),
    ("www.facebook.com", Some("Facebook")),
    ("www.microsoft.com", Some("Microsoft")),
    ("open.spotify.com", Some("Spotify")),
    ("www.apple.com", Some("Apple")),
    ("web.whatsapp.com", Some("WhatsApp")),
    ("discord.com", Some("Discord")),
    ("www.example.org", None),
];

/// Sites also fetched over plain HTTP, and sites a large file is downloaded from (long flows).
const HTTP_SITES: [usize; 3] = [0, 3, 8];
const LONG_SITES: [usize; 3] = [0, 1, 8];
/// Size of the large file (bytes).
const LARGE: usize = 4 << 20;

/// What a client did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// HTTPS to a site, TLS SNI its name.
    Https,
    /// Plain HTTP to a site, Host its name.
    Http,
    /// A DNS lookup through dnsmasq.
    Dns,
    /// An NTP query (chronyd -Q).
    Ntp,
    /// An SSH connection (key exchange, then refused).
    Ssh,
    /// Redis commands (RESP).
    Redis,
    /// A syslog message over UDP.
    Syslog,
}

impl Kind {
    /// The protocol as nDPI names it: the right answer when the service is not named.
    fn protocol(self) -> &'static str {
        match self {
            Kind::Https => "TLS",
            Kind::Http => "HTTP",
            Kind::Dns => "DNS",
            Kind::Ntp => "NTP",
            Kind::Ssh => "other",
            Kind::Redis => "RESP",
            Kind::Syslog => "Syslog",
        }
    }

    /// Row title.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Https => "HTTPS (curl, SNI)",
            Kind::Http => "HTTP (curl, Host)",
            Kind::Dns => "DNS (dnsmasq)",
            Kind::Ntp => "NTP (chronyd)",
            Kind::Ssh => "SSH (OpenSSH)",
            Kind::Redis => "Redis (redis-cli)",
            Kind::Syslog => "syslog (logger)",
        }
    }
}

/// The servers, running until dropped.
pub struct Servers {
    _children: Vec<Killed>,
}

/// The repository's `tests/tools`.
fn tools() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools")
}

/// Debian's Python: the script needs nothing beyond the standard library, and a shim on PATH
/// (pyenv) may point elsewhere.
const PYTHON: &str = "/usr/bin/python3";

impl Servers {
    /// Starts every server in `bed`'s servers namespace, with its files under `dir`, and waits
    /// until each listens.
    pub fn start(bed: &SpanBed, dir: &Path) -> anyhow::Result<Servers> {
        std::fs::create_dir_all(dir)?;
        for (i, _) in SITES.iter().enumerate() {
            bed.add_server_addr(bed.site_addr(i as u8 + 1))?;
        }
        write_site_files(dir)?;
        let mut children = Vec::new();
        let mut spawn = |mut cmd: Command, what: &str| -> anyhow::Result<()> {
            let log = std::fs::File::create(dir.join(format!("{what}.log")))?;
            let child = cmd
                .stdout(log.try_clone()?)
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {what}"))?;
            children.push(Killed(child));
            Ok(())
        };
        let server = bed.server_addr.to_string();

        let mut dns = bed.command(&bed.servers, "dnsmasq");
        dns.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            &format!("--listen-address={server}"),
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
        ]);
        for (i, (name, _)) in SITES.iter().enumerate() {
            dns.arg(format!("--address=/{name}/{}", bed.site_addr(i as u8 + 1)));
        }
        spawn(dns, "dnsmasq")?;

        let mut web = bed.command(&bed.servers, PYTHON);
        web.arg(tools().join("sites.py")).arg(dir);
        spawn(web, "sites")?;

        let chrony = dir.join("chrony-server.conf");
        std::fs::write(
            &chrony,
            format!(
                "allow {server}/24\nlocal stratum 8\ncmdport 0\nbindaddress {server}\npidfile {}\n",
                dir.join("chrony-server.pid").display()
            ),
        )?;
        let mut ntp = bed.command(&bed.servers, "chronyd");
        ntp.args(["-d", "-x", "-u", "root", "-f"]).arg(&chrony);
        spawn(ntp, "chronyd")?;

        // sshd wants its privilege-separation directory and an absolute path.
        std::fs::create_dir_all("/run/sshd")?;
        let key = dir.join("ssh_host_ed25519_key");
        if !key.exists() {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key)
                .output()
                .context("running ssh-keygen (package openssh-client)")?;
            if !out.status.success() {
                bail!(
                    "ssh-keygen: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let mut ssh = bed.command(&bed.servers, "/usr/sbin/sshd");
        ssh.args(["-D", "-e", "-f", "/dev/null", "-h"])
            .arg(&key)
            .arg("-o")
            .arg(format!("ListenAddress={server}"))
            .arg("-o")
            .arg(format!("PidFile={}", dir.join("sshd.pid").display()));
        spawn(ssh, "sshd")?;

        let mut redis = bed.command(&bed.servers, "redis-server");
        redis
            .args(["--bind", &server, "--port", "6379", "--save", ""])
            .args(["--appendonly", "no", "--protected-mode", "no", "--dir"])
            .arg(dir);
        spawn(redis, "redis-server")?;

        let servers = Servers {
            _children: children,
        };
        wait_listening(
            bed,
            &[
                "tcp:53", "udp:53", "tcp:80", "tcp:443", "udp:514", "udp:123", "tcp:22", "tcp:6379",
            ],
            dir,
        )?;
        Ok(servers)
    }
}

/// The certificate (one for every site, self-signed) and the files served.
fn write_site_files(dir: &Path) -> anyhow::Result<()> {
    if !dir.join("cert.pem").exists() {
        let san: Vec<String> = SITES.iter().map(|(n, _)| format!("DNS:{n}")).collect();
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=serveflow demo", "-addext"])
            .arg(format!("subjectAltName={}", san.join(",")))
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .output()
            .context("running openssl (package openssl)")?;
        if !out.status.success() {
            bail!(
                "openssl req: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>serveflow demo</title><p>A page served across the monitored link.\n",
    )?;
    // Incompressible bytes, so the download is as long on the wire as on disk.
    let mut large = Vec::with_capacity(LARGE);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while large.len() < LARGE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        large.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(dir.join("large.bin"), large)?;
    Ok(())
}

/// Waits until every `proto:port` has a listening socket in the servers' namespace.
fn wait_listening(bed: &SpanBed, wanted: &[&str], dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = bed.command(&bed.servers, "ss").args(["-Hlntu"]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| {
                let (proto, port) = w.split_once(':').unwrap_or((w, ""));
                !text.lines().any(|l| {
                    let mut cols = l.split_whitespace();
                    let p = cols.next().unwrap_or("");
                    let local = cols.nth(3).unwrap_or("");
                    p == proto && local.ends_with(&format!(":{port}"))
                })
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "servers not listening on {} after 20 s (their logs are in {})",
                missing.join(", "),
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the clients did, by kind (commands run; each makes one flow or more).
pub type Done = BTreeMap<Kind, usize>;

/// Runs every client `rounds` times, one after another.
pub fn run_clients(bed: &SpanBed, dir: &Path, rounds: usize) -> anyhow::Result<Done> {
    let mut done = Done::new();
    let server = bed.server_addr.to_string();
    let chrony = dir.join("chrony-client.conf");
    std::fs::write(
        &chrony,
        format!(
            "server {server} iburst maxsamples 1\ncmdport 0\npidfile {}\n",
            dir.join("chrony-client.pid").display()
        ),
    )?;
    for _ in 0..rounds {
        for (i, (name, _)) in SITES.iter().enumerate() {
            curl(bed, &format!("https://{name}/index.html"))?;
            *done.entry(Kind::Https).or_default() += 1;
            if LONG_SITES.contains(&i) {
                curl(bed, &format!("https://{name}/large.bin"))?;
                *done.entry(Kind::Https).or_default() += 1;
            }
            if HTTP_SITES.contains(&i) {
                curl(bed, &format!("http://{name}/index.html"))?;
                *done.entry(Kind::Http).or_default() += 1;
            }
        }
        for _ in 0..2 {
            let mut ntp = bed.client("chronyd");
            ntp.args(["-Q", "-u", "root", "-t", "5", "-f"]).arg(&chrony);
            quiet(ntp, "chronyd -Q", true)?;
            *done.entry(Kind::Ntp).or_default() += 1;
        }
        let mut redis = bed.client("redis-cli");
        redis.args(["-h", &server, "SET", "demo", "1"]);
        quiet(redis, "redis-cli", true)?;
        let mut session = bed.client("sh");
        session.args([
            "-c",
            &format!("printf 'INCR demo\\nGET demo\\nLPUSH q a b c\\nLRANGE q 0 -1\\n' | redis-cli -h {server}"),
        ]);
        quiet(session, "redis-cli (session)", true)?;
        *done.entry(Kind::Redis).or_default() += 2;
        let mut ssh = bed.client("ssh");
        ssh.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=5",
            ])
            .arg(format!("nobody@{server}"))
            .arg("true");
        // Refused after the key exchange (no key, no password): the exchange is what counts.
        quiet(ssh, "ssh", false)?;
        *done.entry(Kind::Ssh).or_default() += 1;
        for n in 0..2 {
            let mut log = bed.client("logger");
            log.args(["--udp", "--server", &server, "--port", "514"])
                .arg(format!("serveflow demo message {n}"));
            quiet(log, "logger", true)?;
            *done.entry(Kind::Syslog).or_default() += 1;
        }
    }
    Ok(done)
}

fn curl(bed: &SpanBed, url: &str) -> anyhow::Result<()> {
    let mut cmd = bed.client("curl");
    // -k: the demo's certificate is self-signed.
    cmd.args(["-sSk", "--max-time", "20", "-o", "/dev/null", url]);
    quiet(cmd, &format!("curl {url}"), true)
}

/// Runs `cmd`; fails with its stderr if it fails and `must` is set.
fn quiet(mut cmd: Command, what: &str, must: bool) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if must && !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One row of the score: the flows of one kind of client.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// Flows with a verdict.
    pub flows: usize,
    /// Verdicts with a right label (service or protocol).
    pub right: usize,
    /// Of those, the ones that named the service.
    pub named: usize,
    /// Decided by each stage (`first`, `fast`, `slow`) or fallen back.
    pub by: BTreeMap<String, usize>,
    /// Right verdicts by the stage that decided them.
    pub right_by: BTreeMap<String, usize>,
}

impl Row {
    /// Flows decided by the inline stages (`first`, `fast`).
    pub fn inline(&self) -> usize {
        inline_sum(&self.by)
    }

    /// Of those, the right ones.
    pub fn right_inline(&self) -> usize {
        inline_sum(&self.right_by)
    }
}

fn inline_sum(by: &BTreeMap<String, usize>) -> usize {
    ["first", "fast"]
        .iter()
        .map(|s| by.get(*s).copied().unwrap_or(0))
        .sum()
}

/// The verdicts scored against what the clients did.
#[derive(Clone, Debug, Default)]
pub struct Score {
    /// Per kind of client.
    pub rows: BTreeMap<Kind, Row>,
    /// Verdicts of flows no client made (none expected), as `proto dst:port label`.
    pub unmatched: Vec<String>,
    /// Wrong verdicts, as `kind what -> label`.
    pub wrong: Vec<String>,
}

impl Score {
    /// Sum over the kinds.
    pub fn total(&self) -> Row {
        let mut t = Row::default();
        for r in self.rows.values() {
            t.flows += r.flows;
            t.right += r.right;
            t.named += r.named;
            for (k, v) in &r.by {
                *t.by.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &r.right_by {
                *t.right_by.entry(k.clone()).or_default() += v;
            }
        }
        t
    }
}

/// The stage a verdict names: its inline model (`first`, `fast`), `slow` or `fallback`.
pub fn stage_of(v: &Value) -> String {
    match v["stage"].as_str() {
        Some("fast") => v["model"].as_str().unwrap_or("fast").to_owned(),
        Some(s) => s.to_owned(),
        None => "?".to_owned(),
    }
}

/// Scores `verdicts` (serveflow's JSON lines) of flows made on `bed`.
pub fn score(bed: &SpanBed, verdicts: &[Value]) -> Score {
    let mut out = Score::default();
    let site_of_addr =
        |a: &str| (0..SITES.len()).find(|&i| bed.site_addr(i as u8 + 1).to_string() == a);
    let site_of_name = |n: &str| SITES.iter().position(|(s, _)| *s == n);
    let server = bed.server_addr.to_string();
    for v in verdicts {
        let dst = v["dst"].as_str().unwrap_or("");
        let port = v["dport"].as_u64().unwrap_or(0);
        let proto = v["proto"].as_u64().unwrap_or(0);
        let label = v["label"].as_str().unwrap_or("");
        let (kind, site) = match (proto, port) {
            (6, 443) => (Some(Kind::Https), site_of_addr(dst)),
            (6, 80) => (Some(Kind::Http), site_of_addr(dst)),
            (17, 53) | (6, 53) if dst == server => (
                Some(Kind::Dns),
                v["server_name"].as_str().and_then(site_of_name),
            ),
            (17, 123) if dst == server => (Some(Kind::Ntp), None),
            (6, 22) if dst == server => (Some(Kind::Ssh), None),
            (6, 6379) if dst == server => (Some(Kind::Redis), None),
            (17, 514) if dst == server => (Some(Kind::Syslog), None),
            _ => (None, None),
        };
        let Some(kind) = kind else {
            out.unmatched
                .push(format!("proto {proto} {dst}:{port} -> {label}"));
            continue;
        };
        let service = site.and_then(|i| SITES[i].1);
        let named = service == Some(label);
        let right = named || label == kind.protocol() || (kind == Kind::Ssh && label == "SSH");
        let row = out.rows.entry(kind).or_default();
        row.flows += 1;
        row.right += usize::from(right);
        row.named += usize::from(named);
        *row.by.entry(stage_of(v)).or_default() += 1;
        *row.right_by.entry(stage_of(v)).or_default() += usize::from(right);
        if !right {
            let what = site.map_or(kind.title(), |i| SITES[i].0);
            out.wrong
                .push(format!("{} {what} -> {label}", kind.protocol()));
        }
    }
    out
}

/// Reads serveflow's verdict lines.
pub fn read_verdicts(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("a verdict line: {l}")))
        .collect()
}

/// The score as an aligned table.
pub fn table(score: &Score) -> String {
    let stages = ["first", "fast", "slow", "fallback"];
    let mut out = format!(
        "{:<20} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9}\n",
        "clients", "flows", "right", "named", stages[0], stages[1], stages[2], stages[3]
    );
    let mut line = |title: &str, r: &Row| {
        let by = |s: &str| r.by.get(s).copied().unwrap_or(0);
        out.push_str(&format!(
            "{title:<20} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9}\n",
            r.flows,
            r.right,
            r.named,
            by("first"),
            by("fast"),
            by("slow"),
            by("fallback")
        ));
    };
    for (kind, r) in &score.rows {
        line(kind.title(), r);
    }
    line("all", &score.total());
    out
}

/// Per class serveflow answered: flows, and how many each stage decided.
pub fn class_table(verdicts: &[Value]) -> String {
    let mut classes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for v in verdicts {
        let label = v["label"].as_str().unwrap_or("?").to_owned();
        *classes
            .entry(label)
            .or_default()
            .entry(stage_of(v))
            .or_default() += 1;
    }
    let mut rows: Vec<(String, BTreeMap<String, usize>)> = classes.into_iter().collect();
    rows.sort_by_key(|(c, by)| (std::cmp::Reverse(by.values().sum::<usize>()), c.clone()));
    let mut out = format!(
        "{:<20} {:>6} {:>6} {:>6} {:>6} {:>9}\n",
        "class", "flows", "first", "fast", "slow", "fallback"
    );
    for (class, by) in rows {
        let n = |s: &str| by.get(s).copied().unwrap_or(0);
        out.push_str(&format!(
            "{class:<20} {:>6} {:>6} {:>6} {:>6} {:>9}\n",
            by.values().sum::<usize>(),
            n("first"),
            n("fast"),
            n("slow"),
            n("fallback")
        ));
    }
    out
}

/// Latency from a flow's first packet to its verdict: percentiles and the share under 16 ms.
pub fn latency_line(verdicts: &[Value]) -> String {
    let mut ms: Vec<f64> = verdicts
        .iter()
        .filter_map(|v| v["latency_us"].as_f64())
        .map(|us| us / 1000.0)
        .collect();
    if ms.is_empty() {
        return "latency: no verdicts".to_owned();
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    let under = ms.iter().filter(|&&m| m < 16.0).count() as f64 / ms.len() as f64;
    format!(
        "latency: p50 {:.3} ms | p90 {:.3} ms | p99 {:.3} ms | max {:.3} ms | {:.1}% under 16 ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
        100.0 * under
    )
}
