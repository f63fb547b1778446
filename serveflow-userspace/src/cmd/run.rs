//! `serveflow run`: attach to an interface, receive its TCP/UDP packets through AF_XDP, classify
//! every flow with the serving pipeline (the same one `serveflow replay` runs), and print a
//! summary on SIGINT/SIGTERM or after `--duration`: packets and flows received, verdicts per
//! stage and latency, the kernel's counters and the sockets' drops.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use serveflow_common::XdpCounter;

use crate::{
    capture::afxdp::{SocketStatistics, XskReceiver},
    live::{
        metrics::{self, Hooks, LiveMetrics},
        source::LiveSource,
    },
    model::{bundled, dir::ModelDir},
    pipeline::{
        self,
        cascade::Cascade,
        summary::{counts, CaptureIssues, ServingSummary},
        Feed, PipelineConfig, Speed,
    },
    report::files,
    system::{
        self,
        rss::{self, RssSymmetry},
    },
    verdict::{HookFactory, VerdictHook, VerdictOutput},
    xdp::{AttachMode, FlowMapTotals, VerdictMap, XdpProgram},
};

/// Options of `serveflow run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Interface to attach to.
    pub interface: String,
    /// XDP attach mode.
    pub mode: AttachMode,
    /// Sockets to open (queues 0..n); None = every RX queue.
    pub queues: Option<u32>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Write the summary as JSON here too.
    pub summary: Option<PathBuf>,
    /// Models directory (default: the bundled models of `task`).
    pub models: Option<PathBuf>,
    /// Task of the bundled models.
    pub task: String,
    /// Verdict lines: a file, `-` for stdout, none to only count them.
    pub out: Option<PathBuf>,
    /// Report directory.
    pub report: Option<PathBuf>,
    /// Pipeline settings (speed is ignored: live traffic comes at its own pace; 0 workers:
    /// one per queue).
    pub pipeline: PipelineConfig,
    /// Entries of the kernel's flow and verdict maps.
    pub flow_map_entries: u32,
    /// Early-packet steering: the kernel passes a flow's packets once it is decided or has as
    /// many as the deepest stage needs. Off: every TCP/UDP packet reaches userspace.
    pub steer: bool,
    /// Prometheus metrics address (`GET /metrics`); None: no endpoint.
    pub metrics: Option<std::net::SocketAddr>,
    /// Seconds between status lines on stderr (0: none).
    pub status_interval_s: u64,
    /// Run config file (per-class kernel actions).
    pub config: Option<PathBuf>,
    /// Receive and count only, no parsing or classification: the AF_XDP ceiling of the
    /// interface, for benchmarks.
    pub drain_only: bool,
    /// Which worker owns a flow when there is one per queue.
    pub rss: RssMode,
}

/// `serveflow run --rss`: which worker owns a flow when each RX queue has its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RssMode {
    /// Ask the driver: queue ownership when it reports symmetric RSS, forwarding otherwise.
    #[default]
    Auto,
    /// The NIC sends both directions of a flow to one queue (say so when the driver cannot):
    /// each worker owns what its queue delivers, nothing is forwarded.
    Symmetric,
    /// Workers own flows by serveflow's own hash and forward what arrives on the wrong queue
    /// (always correct).
    Forward,
}

/// `serveflow run --config FILE`:
///
/// ```toml
/// [actions]          # what the kernel does with a decided flow's later packets
/// BitTorrent = "drop"
/// QUIC = "mark:0x10" # pass with skb mark 0x10 (for nftables, ip rule fwmark, tc fw)
/// DNS = "pass"       # the default
/// ```
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Class name -> `pass`, `drop` or `mark:N`.
    #[serde(default)]
    pub actions: BTreeMap<String, String>,
}

/// One class's kernel action as the maps hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassAction {
    /// Class index.
    pub class: u32,
    /// `serveflow_common::action`.
    pub action: u32,
    /// The skb mark, for `action::MARK`.
    pub mark: u32,
}

impl RunConfig {
    /// Reads and checks `path` against the model's classes.
    pub fn load(path: &Path, classes: &[String]) -> anyhow::Result<Vec<ClassAction>> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: RunConfig = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{}: {}", path.display(), e.to_string().replace('\n', " "))
        })?;
        let mut out = Vec::new();
        for (class, action) in &config.actions {
            let Some(i) = classes.iter().position(|c| c == class) else {
                anyhow::bail!(
                    "{}: actions: {class:?} is not a class of the model (classes: {})",
                    path.display(),
                    classes.join(", ")
                );
            };
            let bad = |why: &str| {
                anyhow::anyhow!("{}: actions.{class} = {action:?}: {why}", path.display())
            };
            let (action, mark) = match action.as_str() {
                "pass" => (serveflow_common::action::PASS, 0),
                "drop" => (serveflow_common::action::DROP, 0),
                other => match other.strip_prefix("mark:") {
                    Some(n) => {
                        let n = n.trim();
                        let mark = match n.strip_prefix("0x") {
                            Some(hex) => u32::from_str_radix(hex, 16),
                            None => n.parse(),
                        }
                        .map_err(|_| bad("the mark must be a 32-bit number (decimal or 0x hex)"))?;
                        if mark == 0 {
                            return Err(bad("mark 0 means no mark; use pass"));
                        }
                        (serveflow_common::action::MARK, mark)
                    }
                    None => return Err(bad("expected \"pass\", \"drop\" or \"mark:N\"")),
                },
            };
            out.push(ClassAction {
                class: i as u32,
                action,
                mark,
            });
        }
        Ok(out)
    }
}

/// What a run saw, in userspace and in the kernel.
#[derive(Debug, Default, Serialize)]
pub struct RunSummary {
    /// Interface.
    pub interface: String,
    /// XDP attach mode.
    pub xdp_mode: String,
    /// AF_XDP bind mode (zero-copy or copy).
    pub xsk_mode: String,
    /// AF_XDP sockets (one per RX queue).
    pub queues: u32,
    /// How flows were given to workers: `single` (one worker), `hash` (sharded by serveflow's
    /// hash, packets forwarded to their owner) or `queue` (symmetric RSS: each worker owns its
    /// queue's flows).
    pub flow_ownership: &'static str,
    /// Seconds between ready and stop.
    pub seconds: f64,
    /// What userspace received.
    pub afxdp: UserspaceCounts,
    /// The XDP program's per-outcome counters.
    pub kernel_counters: BTreeMap<&'static str, u64>,
    /// The kernel flow map.
    pub kernel_flow_map: FlowMapTotals,
    /// Drops reported by the AF_XDP sockets (XDP_STATISTICS), summed.
    pub socket_drops: SocketStatistics,
    /// Times the interface went down while serving.
    pub link_down_events: u64,
    /// The interface disappeared while serving (the run stopped early).
    pub interface_gone: bool,
    /// Only received and counted (`--drain-only`): no serving summary.
    pub drain_only: bool,
    /// The serving pipeline's summary (flows in, verdicts out, stages, latency).
    pub serving: Option<ServingSummary>,
}

/// Packets and flows received through AF_XDP.
#[derive(Debug, Default, Serialize)]
pub struct UserspaceCounts {
    /// Frames received.
    pub packets: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Flows started in the flow table (bidirectional 5-tuples within the timeouts).
    pub flows: u64,
    /// Of which TCP.
    pub tcp_flows: u64,
    /// Of which UDP.
    pub udp_flows: u64,
    /// Frames the parser skipped, by reason (should stay empty: the kernel filters first).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Frames of flows that already had their verdict (with steering: only those that
    /// crossed the verdict-map update).
    pub packets_after_verdict: u64,
    /// Frames received per AF_XDP socket (RX queue 0, 1, ...).
    pub by_queue: Vec<u64>,
    /// Frames that carried the kernel's arrival time in their XDP metadata (the rest were
    /// stamped when their batch was read).
    pub kernel_timestamps: u64,
}

/// Runs until SIGINT/SIGTERM or the duration, then prints (and optionally writes) a summary.
pub fn run(opts: &RunOptions) -> anyhow::Result<()> {
    system::check_run_privileges()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the SIGINT/SIGTERM handler")?;
    }

    // Outputs and models first: a bad path or models directory fails before anything is
    // attached.
    if let Some(report) = &opts.report {
        files::prepare(report).context("--report")?;
    }
    if let Some(summary) = &opts.summary {
        files::check_output_file(summary).context("--summary")?;
    }
    let dir = bundled::resolve(opts.models.as_deref(), &opts.task)?;
    let cascade = Arc::new(Cascade::from_models(ModelDir::load(&dir)?));
    // Every stage keeps its own feature state per flow, plus the table's own record.
    let per_flow: usize = 256
        + cascade
            .specs
            .iter()
            .map(|s| s.state_bytes_bound())
            .sum::<usize>();
    crate::limits::check_memory(
        &format!("--max-flows {}", opts.pipeline.flow.max_flows),
        (opts.pipeline.flow.max_flows as u64).saturating_mul(per_flow as u64),
    )
    .map_err(anyhow::Error::msg)?;
    let verdicts = VerdictOutput::to_path(opts.out.as_deref()).with_context(|| {
        format!(
            "creating {}",
            opts.out.as_deref().unwrap_or(Path::new("-")).display()
        )
    })?;

    let actions = match &opts.config {
        Some(path) => RunConfig::load(
            path,
            &cascade
                .classes
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
        )?,
        None => Vec::new(),
    };

    // The interface's queues bound --queues: a socket on a queue it lacks cannot bind.
    let rx_queues = system::interface(&opts.interface)?.rx_queues;
    if let Some(q) = opts.queues.filter(|q| *q > rx_queues) {
        anyhow::bail!(
            "--queues {q}: {} has {rx_queues} RX queue{} (at most {rx_queues}; see `ethtool -l {}`)",
            opts.interface,
            if rx_queues == 1 { "" } else { "s" },
            opts.interface
        );
    }
    let sockets_wanted = u64::from(opts.queues.unwrap_or(rx_queues));
    crate::limits::check_memory(
        &format!("the AF_XDP UMEM of {sockets_wanted} sockets"),
        sockets_wanted * crate::capture::afxdp::UMEM_BYTES,
    )
    .map_err(anyhow::Error::msg)?;
    let mut program = XdpProgram::attach(&opts.interface, opts.mode, opts.flow_map_entries)?;
    for a in &actions {
        program.set_class_action(a.class, a.action, a.mark)?;
    }
    let iface = program.interface().clone();
    let queues = opts.queues.unwrap_or(iface.rx_queues);
    let mut sockets = Vec::with_capacity(queues as usize);
    for queue in 0..queues {
        let socket = XskReceiver::open(&iface, queue).with_context(|| {
            format!("opening the AF_XDP socket on {} queue {queue}", iface.name)
        })?;
        program.bind_socket(queue, &socket.fd())?;
        sockets.push(socket);
    }
    // Userspace needs a flow's packets up to the deepest stage's count, and none once decided.
    let steer_packets = if opts.steer {
        cascade.packets(cascade.inline.len()) as u32
    } else {
        0
    };
    program.set_steer_packets(steer_packets)?;
    let pin_dir = program.pin_dir().to_owned();
    let steer = opts.steer;
    let metrics = LiveMetrics::new(
        cascade.classes.iter().map(|c| c.to_string()).collect(),
        sockets.len(),
        pin_dir.clone(),
    );
    let hook_metrics = Arc::clone(&metrics);
    let hooks: HookFactory = Arc::new(move || {
        let mut hooks = vec![hook_metrics.hook()];
        if steer {
            match VerdictMap::open(&pin_dir) {
                Ok(map) => hooks.push(Box::new(map) as Box<dyn VerdictHook>),
                Err(e) => log::warn!("verdicts will not reach the kernel from this thread: {e}"),
            }
        }
        Some(Box::new(Hooks(hooks)) as Box<dyn VerdictHook>)
    });
    let stop_side = Arc::new(AtomicBool::new(false));
    if let Some(addr) = opts.metrics {
        match metrics::serve(addr, Arc::clone(&metrics), Arc::clone(&stop_side)) {
            Ok(bound) => eprintln!("serveflow: metrics on http://{bound}/metrics"),
            Err(e) => log::warn!("no metrics endpoint: binding {addr}: {e}"),
        }
    }
    watch_link(
        iface.clone(),
        Arc::clone(&metrics),
        Arc::clone(&stop),
        Arc::clone(&stop_side),
    );
    if opts.status_interval_s > 0 {
        status_lines(
            Arc::clone(&metrics),
            Arc::clone(&stop_side),
            Duration::from_secs(opts.status_interval_s),
        );
    }
    let xsk_mode = sockets
        .first()
        .map(|s| s.bind_mode().to_string())
        .unwrap_or_default();
    // The test bed and operators wait for this line before sending traffic.
    eprintln!(
        "serveflow: ready on {} (XDP {} mode, {queues} AF_XDP socket(s), {xsk_mode}, steering {}); maps pinned at {}",
        iface.name,
        program.mode(),
        if steer_packets == 0 { "every packet".to_owned() } else { format!("the first {steer_packets} packets of undecided flows") },
        program.pin_dir().display()
    );

    let started = Instant::now();
    if opts.drain_only {
        let mut source = LiveSource::new(sockets, started, Arc::clone(&stop), opts.duration);
        source.metrics = Some(Arc::clone(&metrics));
        let mut counts = UserspaceCounts::default();
        for input in source.by_ref() {
            if let crate::frame::Input::Packet(p) = input {
                counts.packets += 1;
                counts.bytes += p.data.len() as u64;
            }
        }
        counts.by_queue = source.sockets.iter().map(XskReceiver::received).collect();
        counts.kernel_timestamps = source.kernel_stamped;
        stop_side.store(true, std::sync::atomic::Ordering::Relaxed);
        let serving = None;
        let summary = summarize(
            &mut program,
            &source.sockets,
            (xsk_mode, queues, started),
            counts,
            &metrics,
            serving,
        )?;
        drop(source);
        print_summary(&summary);
        if let Some(path) = &opts.summary {
            std::fs::write(path, serde_json::to_string_pretty(&summary)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    // One worker per socket (the default, or when asked for as many workers as queues): each
    // drains its own queue and forwards other workers' flows; otherwise one source drains
    // every socket and, with several workers, shards flows between them.
    let workers = match opts.pipeline.workers {
        0 => sockets.len(),
        n => n,
    };
    let per_queue = workers > 1 && workers == sockets.len();
    let mut sources: Vec<LiveSource> = if per_queue {
        sockets
            .into_iter()
            .map(|s| LiveSource::new(vec![s], started, Arc::clone(&stop), opts.duration))
            .collect()
    } else {
        vec![LiveSource::new(
            sockets,
            started,
            Arc::clone(&stop),
            opts.duration,
        )]
    };
    for source in &mut sources {
        source.metrics = Some(Arc::clone(&metrics));
    }
    // Workers and the slow pool on the NIC's NUMA node when the kernel says which.
    let cpus = system::numa_cpus(&iface.name);
    if let Some(c) = &cpus {
        eprintln!(
            "serveflow: {} is on a NUMA node with CPUs {c:?}; threads placed there",
            iface.name
        );
    }
    let config = PipelineConfig {
        workers,
        speed: Speed::Max,
        cpus: cpus.or_else(|| opts.pipeline.cpus.clone()),
        progress: Some(Arc::clone(&metrics.progress)),
        live_origin: Some(started),
        ..opts.pipeline.clone()
    };
    let symmetric = per_queue
        && match opts.rss {
            RssMode::Symmetric => true,
            RssMode::Forward => false,
            RssMode::Auto => match rss::rss_symmetry(&iface.name) {
                RssSymmetry::Symmetric(why) => {
                    eprintln!("serveflow: {} hashes flows symmetrically ({why}): each worker owns its queue's flows", iface.name);
                    true
                }
                RssSymmetry::Asymmetric | RssSymmetry::Unknown => false,
            },
        };
    if per_queue && !symmetric {
        // Forwarded packets are read between a worker's own receives: bound their wait.
        for source in &mut sources {
            source.idle_wait = FORWARDING_IDLE_WAIT;
        }
    }
    let feed = match sources.as_mut_slice() {
        [one] => Feed::Shared(one),
        many => Feed::PerWorker {
            sources: many.iter_mut().collect(),
            symmetric,
        },
    };
    let result = pipeline::run(cascade, &config, feed, &verdicts, None, Some(hooks));
    stop_side.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sockets = Vec::new();
    let kernel_timestamps = sources.iter().map(|s| s.kernel_stamped).sum();
    for source in &mut sources {
        if let Some(e) = source.error.take() {
            log::error!("AF_XDP receive failed, stopped early: {e}");
        }
        sockets.append(&mut source.sockets);
    }
    sockets.sort_by_key(XskReceiver::queue);
    let mut counts = userspace_counts(&result);
    counts.by_queue = sockets.iter().map(XskReceiver::received).collect();
    counts.kernel_timestamps = kernel_timestamps;
    let serving = ServingSummary::new(&result, 0, &CaptureIssues::default(), &dir);
    let mut summary = summarize(
        &mut program,
        &sockets,
        (xsk_mode, queues, started),
        counts,
        &metrics,
        Some(serving),
    )?;
    drop(sockets);
    summary.flow_ownership = match (workers, symmetric) {
        (1, _) => "single",
        (_, true) => "queue",
        (_, false) => "hash",
    };

    print_summary(&summary);
    if let Some(serving) = &summary.serving {
        serving.write_lines(&mut std::io::stderr().lock())?;
    }
    if let Some(path) = &opts.summary {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(report) = &opts.report {
        let config = toml::to_string(&config).unwrap_or_default();
        files::write(
            report,
            &result.stats,
            &summary.serving,
            &config,
            result.started,
        )?;
        eprintln!("serveflow: report written to {}", report.display());
    }
    if let Some(e) = &result.output_error {
        anyhow::bail!("writing verdicts: {e}");
    }
    if summary.interface_gone {
        anyhow::bail!(
            "{} disappeared while serving (the kernel detached XDP and unbound the sockets); every flow seen got its verdict and the summary was written",
            iface.name
        );
    }
    Ok(())
}

/// Longest poll(2) sleep of a worker that may have packets forwarded to it.
const FORWARDING_IDLE_WAIT: Duration = Duration::from_millis(1);

/// How often the interface's state is checked.
const LINK_POLL: Duration = Duration::from_millis(200);

/// Watches the interface until `done`: a link that goes down is reported (status line,
/// metrics) and served again when it comes back, since the program and sockets stay in place;
/// an interface that disappears stops the run (`stop` set), because the kernel has detached
/// the program and unbound the sockets with it.
fn watch_link(
    iface: system::Interface,
    metrics: Arc<LiveMetrics>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let spawned = std::thread::Builder::new()
        .name("link".into())
        .spawn(move || {
            let mut down_since: Option<Instant> = None;
            while !done.load(Relaxed) {
                match system::link_state(&iface) {
                    system::LinkState::Up => {
                        if let Some(t) = down_since.take() {
                            metrics.link_up.store(1, Relaxed);
                            eprintln!(
                                "serveflow: {} is up again after {:.1} s; serving",
                                iface.name,
                                t.elapsed().as_secs_f64()
                            );
                        }
                    }
                    system::LinkState::Down => {
                        if down_since.is_none() {
                            down_since = Some(Instant::now());
                            metrics.link_up.store(0, Relaxed);
                            metrics.link_down_events.fetch_add(1, Relaxed);
                            eprintln!(
                                "serveflow: {} went down; XDP and the sockets stay in place until it comes back",
                                iface.name
                            );
                        }
                    }
                    system::LinkState::Gone => {
                        metrics.link_up.store(0, Relaxed);
                        eprintln!("serveflow: {} disappeared; stopping", iface.name);
                        stop.store(true, Relaxed);
                        return;
                    }
                }
                std::thread::sleep(LINK_POLL);
            }
        });
    if let Err(e) = spawned {
        log::warn!("the interface's state will not be watched: {e}");
    }
}

/// Prints one status line per interval until `stop`.
fn status_lines(metrics: Arc<LiveMetrics>, stop: Arc<AtomicBool>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            let mut next = Instant::now() + every;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if Instant::now() < next {
                    continue;
                }
                next += every;
                let [fast, slow, fallback] = metrics.verdicts_by_stage();
                let p = &metrics.progress;
                let drops: u64 = metrics
                    .queues
                    .iter()
                    .flat_map(|q| q.drops[..3].iter())
                    .map(|d| d.load(std::sync::atomic::Ordering::Relaxed))
                    .sum();
                let load = |a: &std::sync::atomic::AtomicU64| {
                    a.load(std::sync::atomic::Ordering::Relaxed)
                };
                let kernel = crate::xdp::pinned::read(&metrics.pins)
                    .map(|s| {
                        let c = |n: &str| s.counters.get(n).copied().unwrap_or(0);
                        format!(
                            "kernel: {} packets, {} redirected, {} passed decided/enough",
                            c("packets"),
                            c("redirected"),
                            c("pass_decided") + c("pass_enough_packets")
                        )
                    })
                    .unwrap_or_default();
                eprintln!(
                    "serveflow: status: {} packets received, {} socket drops; {} flows, {} escalated, slow queue {}; verdicts fast {fast} slow {slow} fallback {fallback}; {kernel}",
                    load(&metrics.received_packets),
                    drops,
                    load(&p.flows),
                    load(&p.escalated),
                    load(&p.slow_queue_depth),
                );
            }
        });
    if let Err(e) = spawned {
        log::warn!("no status lines: {e}");
    }
}

/// Reads the kernel's and the sockets' counters into the run's summary and detaches.
fn summarize(
    program: &mut XdpProgram,
    sockets: &[XskReceiver],
    (xsk_mode, queues, started): (String, u32, Instant),
    afxdp: UserspaceCounts,
    metrics: &LiveMetrics,
    serving: Option<ServingSummary>,
) -> anyhow::Result<RunSummary> {
    let kernel = program.counters()?;
    let mut socket_drops = SocketStatistics::default();
    for socket in sockets {
        socket_drops += socket.statistics()?;
    }
    let summary = RunSummary {
        interface: program.interface().name.clone(),
        xdp_mode: program.mode().to_string(),
        xsk_mode,
        queues,
        flow_ownership: "none",
        seconds: started.elapsed().as_secs_f64(),
        afxdp,
        kernel_counters: XdpCounter::ALL
            .iter()
            .map(|c| (c.name(), kernel[*c as usize]))
            .collect(),
        kernel_flow_map: program.flow_totals()?,
        socket_drops,
        link_down_events: metrics
            .link_down_events
            .load(std::sync::atomic::Ordering::Relaxed),
        interface_gone: system::link_state(program.interface()) == system::LinkState::Gone,
        drain_only: serving.is_none(),
        serving,
    };
    program.detach();
    Ok(summary)
}

/// What the workers received, in the summary's terms.
fn userspace_counts(r: &pipeline::RunResult) -> UserspaceCounts {
    let mut c = UserspaceCounts::default();
    for w in &r.workers {
        c.packets += w.packets;
        c.bytes += w.bytes;
        c.flows += w.flows.started;
        c.tcp_flows += w.tcp_flows;
        c.udp_flows += w.udp_flows;
        c.packets_after_verdict += w.packets_after_verdict;
        for (k, v) in &w.skipped {
            *c.skipped.entry(k).or_default() += v;
        }
    }
    c
}

fn print_summary(s: &RunSummary) {
    eprintln!(
        "serveflow: {} for {:.1}s: AF_XDP received {} packets ({} bytes) in {} flows ({} TCP, {} UDP)",
        s.interface,
        s.seconds,
        s.afxdp.packets,
        s.afxdp.bytes,
        s.afxdp.flows,
        s.afxdp.tcp_flows,
        s.afxdp.udp_flows
    );
    let counters: Vec<String> = s
        .kernel_counters
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    eprintln!("serveflow: kernel: {}", counters.join(" "));
    eprintln!(
        "serveflow: kernel flow map: {} flows, {} packets; socket drops: {}",
        s.kernel_flow_map.flows,
        s.kernel_flow_map.packets,
        s.socket_drops.total()
    );
    if !s.afxdp.skipped.is_empty() {
        eprintln!(
            "serveflow: userspace parser skipped: {}",
            counts(s.afxdp.skipped.iter().map(|(k, v)| (*k, *v)))
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn run_config_actions_are_checked_against_the_classes() {
        let classes: Vec<String> = vec!["DNS".into(), "BitTorrent".into(), "QUIC".into()];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(
            &path,
            "[actions]\nBitTorrent = \"drop\"\nDNS = \"pass\"\nQUIC = \"mark:0x10\"\n",
        )
        .unwrap();
        let a = RunConfig::load(&path, &classes).unwrap();
        let action = |class, action, mark| ClassAction {
            class,
            action,
            mark,
        };
        use serveflow_common::action::{DROP, MARK, PASS};
        assert_eq!(
            a,
            vec![action(1, DROP, 0), action(0, PASS, 0), action(2, MARK, 16)]
        );
        std::fs::write(&path, "[actions]\nQUIC = \"mark:42\"\n").unwrap();
        assert_eq!(
            RunConfig::load(&path, &classes).unwrap(),
            vec![action(2, MARK, 42)]
        );
        for (text, needle) in [
            ("[actions]\nNope = \"drop\"\n", "not a class of the model"),
            ("[actions]\nDNS = \"mark:0\"\n", "mark 0 means no mark"),
            ("[actions]\nDNS = \"mark:lots\"\n", "32-bit number"),
            (
                "[actions]\nDNS = \"mark\"\n",
                "expected \"pass\", \"drop\" or \"mark:N\"",
            ),
            ("[actions]\nDNS = \"explode\"\n", "expected \"pass\""),
            ("[colour]\n", "unknown field"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = RunConfig::load(&path, &classes).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
