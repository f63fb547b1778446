//! `cargo xtask compare`: serveflow against NFStream and nDPI's `ndpiReader` on one large
//! capture, in one run. The capture is the service-rate bench's input written out
//! (`serveflow bench --write-capture`: the nDPI captures of `../shared/data` amplified with
//! rewritten addresses); it is read once to sit in the page cache, then every tool runs on it
//! in alternating rounds (the order rotates each round, so no tool always runs on a warm or a
//! cold machine). Each run is one whole process, timed from spawn to exit, its peak resident
//! memory from `wait4`'s rusage (which starts from this process's own peak, kept to a few MiB
//! by streaming the capture instead of holding it). The table gives min/median/max of the rounds and each tool's
//! median against NFStream's and ndpiReader's.

use std::{
    fmt::Write as _,
    fs::File,
    io::Read,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _};

use crate::{exec, root};

/// Options of `cargo xtask compare`.
pub struct CompareOptions {
    /// Distinct flows in the capture.
    pub flows: u64,
    /// Rounds (each runs every tool once).
    pub rounds: usize,
}

/// One tool's command line.
struct Tool {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    /// Finds the flow count in the tool's stdout.
    flows: fn(&str) -> Option<u64>,
}

/// One run of one tool.
#[derive(Clone, Copy)]
struct Run {
    wall_s: f64,
    /// Peak resident memory, MiB.
    peak_mib: f64,
}

/// NFStream with its defaults (nDPI dissection of the first packets, statistics off), one
/// Python object per flow, as its users read them.
const NFSTREAM: &str = "import sys\n\
from nfstream import NFStreamer\n\
print(sum(1 for _ in NFStreamer(source=sys.argv[1])))\n";

pub fn run(opts: &CompareOptions) -> anyhow::Result<()> {
    let root = root();
    let data = root.join("../shared/data");
    if !data.join("ndpi/pcap").is_dir() {
        bail!(
            "{}: no ndpi/pcap here; the comparison is built from ../shared/data",
            data.display()
        );
    }
    let serveflow = crate::build_serveflow()?;
    let dir = root.join("target/compare");
    std::fs::create_dir_all(&dir)?;
    let capture = dir.join(format!("amplified-{}.pcap", opts.flows));
    if !capture.is_file() {
        let partial = dir.join("partial.pcap");
        exec(
            Command::new(&serveflow)
                .arg("bench")
                .arg("--data")
                .arg(&data)
                .args([
                    "--flows",
                    &opts.flows.to_string(),
                    "--write-capture",
                    &partial.display().to_string(),
                ]),
        )?;
        std::fs::rename(&partial, &capture)?;
    }
    // Read once, streamed: the capture sits in the page cache for every tool, and this process
    // stays small (a spawned child's peak RSS starts from its parent's peak).
    let file = File::open(&capture).with_context(|| format!("reading {}", capture.display()))?;
    let size_mib = file.metadata()?.len() as f64 / (1 << 20) as f64;
    let packets = count_pcap_records(std::io::BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("reading {}", capture.display()))?;

    let tools = tools(&serveflow, &capture);
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); tools.len()];
    let mut flows: Vec<Option<u64>> = vec![None; tools.len()];
    for round in 0..opts.rounds {
        for k in 0..tools.len() {
            let i = (k + round) % tools.len();
            let tool = &tools[i];
            let stdout = dir.join(format!("{}.out", i));
            let r = time(tool, &stdout)?;
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            flows[i] = flows[i].or((tool.flows)(&text));
            eprintln!(
                "compare: round {}/{}: {}: {:.3} s, {:.1} MiB",
                round + 1,
                opts.rounds,
                tool.name,
                r.wall_s,
                r.peak_mib
            );
            runs[i].push(r);
        }
    }
    let table = table(&tools, &runs, &flows, packets, size_mib, opts);
    std::fs::write(dir.join("compare.md"), &table)?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), table.as_bytes())?;
    eprintln!("compare: written {}", dir.join("compare.md").display());
    Ok(())
}

fn tools(serveflow: &Path, capture: &Path) -> Vec<Tool> {
    let input = capture.display().to_string();
    let sf = |args: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        a.insert(1, input.clone());
        a
    };
    let replay_flows = |text: &str| -> Option<u64> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        v["flows_in"].as_u64()
    };
    let extract_flows = |text: &str| -> Option<u64> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        v["flows"]["started"].as_u64()
    };
    vec![
        Tool {
            name: "serveflow replay (cascade, verdicts written)",
            program: serveflow.to_owned(),
            args: sf(&[
                "replay",
                "--speed",
                "max",
                "--out",
                "/dev/null",
                "--json",
                "-q",
            ]),
            flows: replay_flows,
        },
        Tool {
            name: "serveflow replay (fast stages only)",
            program: serveflow.to_owned(),
            args: sf(&[
                "replay",
                "--speed",
                "max",
                "--mode",
                "fast-only",
                "--json",
                "-q",
            ]),
            flows: replay_flows,
        },
        Tool {
            name: "serveflow extract (stats features)",
            program: serveflow.to_owned(),
            args: sf(&[
                "extract",
                "--features",
                "stats",
                "--out",
                "/dev/null",
                "--json",
                "-q",
            ]),
            flows: extract_flows,
        },
        Tool {
            name: "NFStream (nDPI inside)",
            program: root().join(".tools/venv/bin/python"),
            args: vec!["-c".into(), NFSTREAM.into(), input.clone()],
            flows: |text| text.trim().parse().ok(),
        },
        Tool {
            name: "ndpiReader (nDPI's C reader)",
            program: PathBuf::from("ndpiReader"),
            args: vec!["-i".into(), input.clone()],
            flows: ndpi_reader_flows,
        },
    ]
}

/// `ndpiReader` prints its totals (`-q` would silence them); the flow count is on the line
/// starting `Unique flows` (4.2) or `Flows` (other versions).
fn ndpi_reader_flows(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let l = l.trim();
        let rest = l
            .strip_prefix("Unique flows:")
            .or_else(|| l.strip_prefix("Flows:"))?;
        rest.split_whitespace()
            .next()?
            .replace(',', "")
            .parse()
            .ok()
    })
}

/// Runs `tool` once, stdout into `stdout`, and measures it.
fn time(tool: &Tool, stdout: &Path) -> anyhow::Result<Run> {
    let start = Instant::now();
    let child = Command::new(&tool.program)
        .args(&tool.args)
        .stdin(Stdio::null())
        .stdout(File::create(stdout)?)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", tool.program.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for; both pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall_s = start.elapsed().as_secs_f64();
    if waited != pid {
        bail!(
            "waiting for {}: {}",
            tool.name,
            std::io::Error::last_os_error()
        );
    }
    let exit = std::process::ExitStatus::from_raw(status);
    if !exit.success() {
        bail!(
            "{} failed ({exit}): {} {}",
            tool.name,
            tool.program.display(),
            tool.args.join(" ")
        );
    }
    Ok(Run {
        wall_s,
        // ru_maxrss is in KiB on Linux.
        peak_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

/// Records in a classic pcap file (either byte order), walking the record headers.
fn count_pcap_records(mut r: impl Read) -> std::io::Result<u64> {
    let mut header = [0u8; 24];
    if r.read_exact(&mut header).is_err() {
        return Ok(0);
    }
    let little = matches!(
        header[..4],
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]
    );
    let (mut n, mut record, mut body) = (0u64, [0u8; 16], Vec::new());
    while r.read_exact(&mut record).is_ok() {
        let len = [record[8], record[9], record[10], record[11]];
        let len = if little {
            u32::from_le_bytes(len)
        } else {
            u32::from_be_bytes(len)
        };
        body.resize(len as usize, 0);
        r.read_exact(&mut body)?;
        n += 1;
    }
    Ok(n)
}

fn stats(runs: &[Run], of: impl Fn(&Run) -> f64) -> (f64, f64, f64) {
    let mut v: Vec<f64> = runs.iter().map(of).collect();
    v.sort_by(f64::total_cmp);
    let median = match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    (
        v.first().copied().unwrap_or(0.0),
        median,
        v.last().copied().unwrap_or(0.0),
    )
}

fn table(
    tools: &[Tool],
    runs: &[Vec<Run>],
    flows: &[Option<u64>],
    packets: u64,
    size_mib: f64,
    opts: &CompareOptions,
) -> String {
    let median = |name: &str| {
        tools
            .iter()
            .position(|t| t.name.starts_with(name))
            .map(|i| stats(&runs[i], |r| r.wall_s).1)
    };
    let (nfstream, ndpi) = (median("NFStream"), median("ndpiReader"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Capture: {packets} packets ({size_mib:.0} MiB), the nDPI captures amplified to {} flows; {} rounds, whole-process wall time and peak RSS\n",
        opts.flows, opts.rounds
    );
    let _ = writeln!(
        s,
        "| tool | wall s: min / median / max | peak RSS MiB (median) | flows it reports | NFStream / it | ndpiReader / it |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for (i, t) in tools.iter().enumerate() {
        let (lo, mid, hi) = stats(&runs[i], |r| r.wall_s);
        let (_, rss, _) = stats(&runs[i], |r| r.peak_mib);
        let ratio = |base: Option<f64>| {
            base.map_or("-".to_owned(), |b| format!("{:.1}x", b / mid.max(1e-9)))
        };
        let _ = writeln!(
            s,
            "| {} | {lo:.3} / **{mid:.3}** / {hi:.3} | {rss:.0} | {} | {} | {} |",
            t.name,
            flows[i].map_or("-".to_owned(), |f| f.to_string()),
            ratio(nfstream),
            ratio(ndpi)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

    use super::*;

    #[test]
    fn ndpi_reader_totals_are_read() {
        let out = "\tTraffic statistics:\n\tEthernet bytes:        1 (includes ...)\n\
                   \tUnique flows:          45,123\n";
        assert_eq!(ndpi_reader_flows(out), Some(45_123));
        assert_eq!(ndpi_reader_flows("nothing"), None);
    }

    #[test]
    fn pcap_records_are_counted_in_either_byte_order() {
        let mut le = vec![0xd4, 0xc3, 0xb2, 0xa1];
        le.resize(24, 0);
        for len in [3u32, 5] {
            le.extend_from_slice(&[0; 8]);
            le.extend_from_slice(&len.to_le_bytes());
            le.extend_from_slice(&len.to_le_bytes());
            le.extend(std::iter::repeat_n(0u8, len as usize));
        }
        assert_eq!(count_pcap_records(le.as_slice()).unwrap(), 2);
        assert_eq!(count_pcap_records(&[][..]).unwrap(), 0);
    }

    #[test]
    fn stats_are_min_median_max() {
        let runs: Vec<Run> = [3.0, 1.0, 2.0, 10.0]
            .iter()
            .map(|&w| Run {
                wall_s: w,
                peak_mib: 0.0,
            })
            .collect();
        assert_eq!(stats(&runs, |r| r.wall_s), (1.0, 2.5, 10.0));
    }
}
