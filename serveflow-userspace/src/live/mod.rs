//! The live session: what `serveflow run` does between attaching to an interface and its
//! summary, as a library.
//!
//! - `session`: attach the XDP program, bind one AF_XDP socket per RX queue, set steering,
//!   the per-class kernel actions and the verdict hooks.
//! - `source`: the sockets as pipeline input, stamped with the kernel's arrival times.
//! - `control`: one control loop for metrics scrapes, link watch and status lines.
//! - [`metrics`]: the Prometheus counters and gauges the run keeps.
//! - [`summary`]: the run's typed summary.

pub(crate) mod control;
pub mod metrics;
pub(crate) mod session;
pub(crate) mod source;
pub mod summary;

use std::{
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use crate::{
    capture::afxdp::{AfXdpError, XskReceiver},
    config::{Config, ConfigError, RssMode, Speed},
    export::{ExportError, Exporter},
    frame::Input,
    model::{
        bundled,
        dir::{ModelDir, ModelDirError},
    },
    pipeline::{
        self,
        cascade::Cascade,
        summary::{CaptureIssues, ServingSummary},
        Feed, PipelineConfig, RunResult,
    },
    system::{
        self,
        rss::{self, RssSymmetry},
        SystemError,
    },
    verdict::{HookFactory, VerdictHook, VerdictOutput},
    xdp::XdpError,
};
use control::{Control, ControlConfig};
use metrics::{Hooks, LiveMetrics, MetricsEndpoint};
use session::Session;
use source::LiveSource;
use summary::{RunSummary, UserspaceCounts};

/// Why a live run could not start (once it runs, it ends with a summary).
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Missing privileges, bpffs, memlock, or no such interface.
    #[error(transparent)]
    System(#[from] SystemError),
    /// The models directory.
    #[error(transparent)]
    Models(#[from] ModelDirError),
    /// The `[actions]` against the model's classes.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No interface was named.
    #[error("no interface: give --interface (or [capture] interface in the config file)")]
    NoInterface,
    /// More queues or memory than the host has.
    #[error("{0}")]
    Resources(String),
    /// The verdict output could not be created.
    #[error("creating {}: {source}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// An export sink could not start (unreachable collector, broker, file).
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Attaching or configuring the XDP program.
    #[error(transparent)]
    Xdp(#[from] XdpError),
    /// An AF_XDP socket.
    #[error("opening the AF_XDP socket on {iface} queue {queue}: {source}")]
    Socket {
        /// Interface.
        iface: String,
        /// RX queue.
        queue: u32,
        /// Cause.
        source: AfXdpError,
    },
    /// The control loop's thread.
    #[error("starting the control loop: {0}")]
    Control(std::io::Error),
}

/// How long and how much of the pipeline a live run uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveRun {
    /// Stop after this long (None: at the stop flag only).
    pub duration: Option<Duration>,
    /// Receive and count only, no parsing or classification: the interface's AF_XDP ceiling.
    pub drain_only: bool,
}

/// What a live run produced.
#[derive(Debug)]
pub struct LiveOutcome {
    /// Its summary.
    pub summary: RunSummary,
    /// The serving pipeline's result (None when only draining).
    pub result: Option<RunResult>,
    /// The settings that ran, with the models directory resolved (a valid `--config`).
    pub config: Config,
}

/// Longest poll(2) sleep of a worker that may have packets forwarded to it.
const FORWARDING_IDLE_WAIT: Duration = Duration::from_millis(1);

/// Serves `config`'s interface until `stop` is set or `run.duration` has passed, then
/// detaches and returns the summary. Every flow seen gets its verdict.
pub fn run(
    config: &Config,
    run: LiveRun,
    stop: &Arc<AtomicBool>,
) -> Result<LiveOutcome, LiveError> {
    system::check_run_privileges()?;
    let mut config = config.clone();
    // Models and outputs first: a bad models directory or path fails before anything is
    // attached.
    let dir = bundled::resolve(config.pipeline.models.as_deref(), config.pipeline.task)?;
    config.pipeline.models = Some(dir.clone());
    let mut cascade = Cascade::from_models(ModelDir::load(&dir)?);
    if let Some(t) = config.routing.threshold {
        cascade.set_threshold(t);
    }
    cascade.apply_mode(config.pipeline.mode);
    let cascade = Arc::new(cascade);
    // Every stage keeps its own feature state per flow, plus the table's own record.
    let per_flow: usize = 256
        + cascade
            .specs
            .iter()
            .map(|s| s.state_bytes_bound())
            .sum::<usize>();
    crate::limits::check_memory(
        &format!("--max-flows {}", config.flow.max_flows),
        (config.flow.max_flows as u64).saturating_mul(per_flow as u64),
    )
    .map_err(LiveError::Resources)?;
    let out = config.export.out.clone();
    let verdicts = VerdictOutput::to_path(out.as_deref()).map_err(|source| LiveError::Output {
        path: out.unwrap_or_else(|| PathBuf::from("-")),
        source,
    })?;

    // Before attaching: a collector or broker that cannot be reached is a start-up error.
    let exporter = Exporter::start(&config.export.to, &config.export.sinks())?;
    let session = Session::open(&config, &cascade)?;
    let iface = session.iface().clone();
    let metrics = LiveMetrics::new(
        cascade.classes.iter().map(|c| c.to_string()).collect(),
        session.sockets.len(),
        session.pin_dir(),
        exporter.stats(),
    );
    let hooks = both(session.hooks(&metrics), exporter.hooks());
    let endpoint = config
        .metrics
        .listen
        .and_then(|addr| match MetricsEndpoint::bind(addr) {
            Ok(e) => {
                if let Ok(bound) = e.addr() {
                    eprintln!("serveflow: metrics on http://{bound}/metrics");
                }
                Some(e)
            }
            Err(e) => {
                log::warn!("no metrics endpoint: binding {addr}: {e}");
                None
            }
        });
    let status_every = config.metrics.status_interval_s;
    let control = Control::start(
        ControlConfig {
            iface: iface.clone(),
            endpoint,
            status_every: (status_every > 0).then(|| Duration::from_secs(status_every)),
        },
        Arc::clone(&metrics),
        Arc::clone(stop),
    )
    .map_err(LiveError::Control)?;
    eprintln!("serveflow: {}", session.ready_line());

    let Session {
        mut program,
        sockets,
        ..
    } = session;
    let started = Instant::now();
    if run.drain_only {
        let mut source = LiveSource::new(sockets, started, Arc::clone(stop), run.duration);
        source.metrics = Some(Arc::clone(&metrics));
        let mut counts = UserspaceCounts::default();
        for input in source.by_ref() {
            if let Input::Packet(p) = input {
                counts.packets += 1;
                counts.bytes += p.data.len() as u64;
                p.recycle();
            }
        }
        counts.by_queue = source.sockets.iter().map(XskReceiver::received).collect();
        counts.kernel_timestamps = source.kernel_stamped;
        control.finish();
        let secs = started.elapsed().as_secs_f64();
        let summary = RunSummary::read(&program, &source.sockets, secs, counts, &metrics, None)?;
        program.detach();
        return Ok(LiveOutcome {
            summary,
            result: None,
            config,
        });
    }
    // One worker per socket (the default, or when asked for as many workers as queues): each
    // drains its own queue and forwards other workers' flows; otherwise one source drains
    // every socket and, with several workers, shards flows between them.
    let workers = config.pipeline.workers.unwrap_or(sockets.len());
    let per_queue = workers > 1 && workers == sockets.len();
    let mut sources: Vec<LiveSource> = if per_queue {
        sockets
            .into_iter()
            .map(|s| LiveSource::new(vec![s], started, Arc::clone(stop), run.duration))
            .collect()
    } else {
        vec![LiveSource::new(
            sockets,
            started,
            Arc::clone(stop),
            run.duration,
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
    let symmetric = per_queue && symmetric_rss(config.capture.rss, &iface.name);
    if per_queue && !symmetric {
        // Forwarded packets are read between a worker's own receives: bound their wait.
        for source in &mut sources {
            source.idle_wait = FORWARDING_IDLE_WAIT;
        }
    }
    let pipeline_config = PipelineConfig {
        speed: Speed::Max,
        cpus: cpus.or_else(|| config.pipeline.cpus.clone()),
        progress: Some(Arc::clone(&metrics.progress)),
        live_origin: Some(started),
        ..PipelineConfig::from_config(&config, workers)
    };
    let feed = match sources.as_mut_slice() {
        [one] => Feed::Shared(one),
        many => Feed::PerWorker {
            sources: many.iter_mut().collect(),
            symmetric,
        },
    };
    let result = pipeline::run(
        cascade,
        &pipeline_config,
        feed,
        &verdicts,
        None,
        Some(hooks),
    );
    control.finish();
    let mut sockets = Vec::new();
    let kernel_timestamps = sources.iter().map(|s| s.kernel_stamped).sum();
    for source in &mut sources {
        if let Some(e) = source.error.take() {
            log::error!("AF_XDP receive failed, stopped early: {e}");
        }
        sockets.append(&mut source.sockets);
    }
    sockets.sort_by_key(XskReceiver::queue);
    let mut counts = UserspaceCounts::of(&result);
    counts.by_queue = sockets.iter().map(XskReceiver::received).collect();
    counts.kernel_timestamps = kernel_timestamps;
    let mut serving = ServingSummary::new(&result, 0, &CaptureIssues::default(), &dir);
    serving.exports = exporter.finish();
    let secs = started.elapsed().as_secs_f64();
    let mut summary = RunSummary::read(&program, &sockets, secs, counts, &metrics, Some(serving))?;
    program.detach();
    drop(sockets);
    summary.flow_ownership = match (workers, symmetric) {
        (1, _) => "single",
        (_, true) => "queue",
        (_, false) => "hash",
    };
    Ok(LiveOutcome {
        summary,
        result: Some(result),
        config,
    })
}

/// Each deciding thread gets both factories' hooks.
fn both(a: HookFactory, b: HookFactory) -> HookFactory {
    Arc::new(move || {
        let hooks: Vec<Box<dyn VerdictHook>> = [a(), b()].into_iter().flatten().collect();
        Some(Box::new(Hooks(hooks)) as Box<dyn VerdictHook>)
    })
}

/// Whether each worker may own its queue's flows: the operator says so, or the driver
/// reports symmetric RSS.
fn symmetric_rss(mode: RssMode, iface: &str) -> bool {
    match mode {
        RssMode::Symmetric => true,
        RssMode::Forward => false,
        RssMode::Auto => match rss::rss_symmetry(iface) {
            RssSymmetry::Symmetric(why) => {
                eprintln!(
                    "serveflow: {iface} hashes flows symmetrically ({why}): each worker owns its queue's flows"
                );
                true
            }
            RssSymmetry::Asymmetric | RssSymmetry::Unknown => false,
        },
    }
}
