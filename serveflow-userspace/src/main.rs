//! `serveflow`: the appliance's command line. Each subcommand owns its options and is a thin
//! shell over the library; errors reach the operator as one line that says what to do.

mod cmd;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "serveflow",
    version,
    about = "Early-packet flow classification on AF_XDP"
)]
struct Cli {
    /// More log lines (-v debug, -vv trace); RUST_LOG, when set, decides instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Warnings and errors only, and no progress lines.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to an interface and receive its TCP/UDP flows through AF_XDP until SIGINT/SIGTERM.
    Run(cmd::run::RunArgs),
    /// Live counters of running instances from their pinned maps.
    Status(cmd::status::StatusArgs),
    /// Read pcap/pcapng files as one timeline and write one row per TCP/UDP flow.
    Extract(cmd::extract::ExtractArgs),
    /// Show a models directory; with captures, run every stage on every flow and tally.
    Models(cmd::models::ModelsArgs),
    /// Classify the flows of capture files with the fast-slow pipeline: one verdict per flow,
    /// a summary, and an HDR latency report.
    Replay(cmd::replay::ReplayArgs),
    /// Serving benchmark: accuracy and latency per mode, then service rate over 1..N workers.
    Bench(cmd::bench::BenchArgs),
    /// Pick routing thresholds on labeled captures for a target and write them into a models
    /// directory's manifest.
    Calibrate(cmd::calibrate::CalibrateArgs),
    /// Train a models directory from labeled captures (runs `serveflow-train train`).
    #[command(disable_help_flag = true)]
    Train(cmd::train::TrainerArgs),
    /// Craft models over features x packets x size and pick them from the Pareto front (runs
    /// `serveflow-train craft`).
    #[command(disable_help_flag = true)]
    Craft(cmd::train::TrainerArgs),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions(cmd::docs::CompletionsArgs),
    /// Print the man page (or write one per command with --out DIR).
    Man(cmd::docs::ManArgs),
}

/// The exit statuses, in every command's `--help` and the README.
const EXIT_CODES: &str = "Exit status:
  0  done (with --keep-going, also when unreadable inputs were skipped; they are listed)
  1  failed: the message says why (an input that cannot be read, a broken models directory,
     missing privileges, an output that cannot be written, ...)
  2  bad command line: an unknown or conflicting option, or a value outside its stated range
     (from a flag or the --config file)";

/// The error and its causes on one line, each cause once: a library error that already
/// quotes its source ("reading x: No such file") is not followed by that source again.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// mimalloc instead of glibc's malloc: per-flow state is allocated and freed millions of times a
/// second across threads (docs/benchmarks.md, "Hot-path steps").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc.h's option enum (the fifth, in v2 and v3).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Arenas committed as they are used, not all at once: eager commit doubled the system time
/// (pages cleared again after each purge) and added 35 MiB of resident memory. Set from the
/// process's constructors, before the Rust runtime's first allocation reserves an arena.
extern "C" fn allocator_options() {
    // SAFETY: stores one option value; mimalloc reads it when it next reserves an arena.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[used]
#[unsafe(link_section = ".init_array")]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

fn main() -> ExitCode {
    // Every subcommand's --help ends with the exit statuses too.
    let matches = Cli::command()
        .after_help(EXIT_CODES)
        .mut_subcommands(|s| s.after_help(EXIT_CODES))
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_target(false)
        .init();
    serveflow::ticker::set_quiet(cli.quiet);
    let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Run(a) => done(a.run()),
        Command::Status(a) => done(a.run()),
        Command::Extract(a) => done(a.run()),
        Command::Models(a) => a.run(),
        Command::Replay(a) => done(a.run()),
        Command::Bench(a) => done(a.run()),
        Command::Calibrate(a) => done(a.run()),
        Command::Train(a) => done(a.run("train")),
        Command::Craft(a) => done(a.run("craft")),
        Command::Completions(a) => done(a.run(Cli::command())),
        Command::Man(a) => done(a.run(Cli::command().after_help(EXIT_CODES))),
    };
    result.unwrap_or_else(|e| {
        eprintln!("serveflow: error: {}", message(&e));
        match e.downcast_ref::<cmd::args::UsageError>() {
            Some(_) => ExitCode::from(2),
            None => ExitCode::FAILURE,
        }
    })
}
