//! `serveflow status`: live counters of running instances, read from their pinned maps (the
//! same maps `bpftool map dump pinned ...` shows), without touching the running process.

use std::{io::Write as _, path::PathBuf};

use serveflow_common::PIN_SCHEMA;

use serveflow::xdp::pinned;

/// `serveflow status`: live counters of running instances from their pinned maps (kernel
/// outcomes, flow map, decided flows, steering).
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Interface (default: [capture] interface of --config, else every interface with
    /// pinned maps).
    #[arg(short, long)]
    pub interface: Option<String>,
    /// Print JSON: a list with one object per instance (`[]` when none runs, exit 0).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: super::args::ConfigArgs,
}

impl StatusArgs {
    /// Runs `serveflow status`.
    pub fn run(&self) -> anyhow::Result<()> {
        let config = self.config.load()?;
        run(&StatusOptions {
            interface: self.interface.clone().or(config.capture.interface),
            json: self.json,
            bpffs: PathBuf::from("/sys/fs/bpf"),
        })
    }
}

/// Options of `serveflow status`.
#[derive(Clone, Debug)]
pub struct StatusOptions {
    /// Interface; every pinned one when absent.
    pub interface: Option<String>,
    /// Print JSON.
    pub json: bool,
    /// bpffs mount point.
    pub bpffs: PathBuf,
}

/// Runs `serveflow status`.
pub fn run(opts: &StatusOptions) -> anyhow::Result<()> {
    let root = opts.bpffs.join(PIN_SCHEMA);
    let dirs: Vec<PathBuf> = match &opts.interface {
        Some(i) => vec![root.join(i)],
        None => pinned::instances(&opts.bpffs),
    };
    if dirs.is_empty() && opts.json {
        // For scripts and monitors: nothing running is an empty list, not a failure.
        writeln!(std::io::stdout().lock(), "[]")?;
        return Ok(());
    }
    if dirs.is_empty() {
        anyhow::bail!(
            "no serveflow instance has pinned maps under {}: is `serveflow run` running?",
            root.display()
        );
    }
    let mut all = Vec::new();
    for dir in &dirs {
        if !dir.is_dir() {
            anyhow::bail!(
                "{} does not exist: no `serveflow run` on that interface",
                dir.display()
            );
        }
        all.push(pinned::read(dir)?);
    }
    let out = &mut std::io::stdout().lock();
    if opts.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(());
    }
    for s in &all {
        let steer = if s.steer_packets == 0 {
            "every packet".to_owned()
        } else {
            format!("first {} packets of undecided flows", s.steer_packets)
        };
        writeln!(out, "{} ({}): steering {steer}", s.interface, s.pins)?;
        writeln!(
            out,
            "  kernel flow map: {} flows, {} packets, {} bytes; {} flows decided",
            s.flows, s.flow_packets, s.flow_bytes, s.decided_flows
        )?;
        if !s.maps.is_empty() {
            let each: Vec<String> = s
                .maps
                .iter()
                .map(|m| {
                    format!(
                        "{} {} slots {:.1} MiB",
                        m.name,
                        m.max_entries,
                        m.memlock_bytes as f64 / (1 << 20) as f64
                    )
                })
                .collect();
            writeln!(
                out,
                "  kernel memory: {}; {:.0} bytes per flow slot",
                each.join(", "),
                s.kernel_bytes_per_flow
            )?;
        }
        let nonzero: Vec<String> = s
            .counters
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(out, "  counters: {}", nonzero.join(" "))?;
    }
    Ok(())
}
