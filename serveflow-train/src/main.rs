//! `serveflow-train`: trains a models directory from labeled captures (`train`, one fixed
//! configuration), crafts one (`craft`, a grid of candidates and their Pareto front), or runs
//! the leave-one-source-out check of a models directory's recipe (`loso`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serveflow::{
    calibrate::Target,
    features::FeatureSpec,
    limits::Choice,
    ticker::{self, Ticker},
};
use serveflow_train::{
    craft::{self, CraftOptions},
    dataset::{Corpus, Task},
    loso, mlp,
    pipeline::{self, Recipe, TrainOptions, TreeStage, DEFAULT_WAITS_MS},
    progress::{note, STEPS},
    split::{Holdout, SplitOptions},
    trees::FastParams,
};

/// `--task service|device`.
fn task(name: &str) -> Result<Task, String> {
    Task::from_name(name)
        .ok_or_else(|| format!("{name:?}: expected one of {}", Task::names().join(", ")))
}

#[derive(Parser)]
#[command(
    name = "serveflow-train",
    about = "Train serveflow's models from labeled captures"
)]
struct Cli {
    /// No progress line and no notes on stderr; the results are still printed.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// Data, labels and split.
#[derive(Args)]
struct SplitArgs {
    /// Task: service (nDPI app names) or device (IoT Sentinel device types).
    #[arg(long, value_parser = task)]
    task: Task,
    /// Data folder with the captures and labels/ (the ../shared/data layout).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Output models directory [default: models/<task>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// A label needs this many training flows to be its own class (others are grouped as
    /// `other`).
    #[arg(long, default_value_t = 15)]
    min_flows: usize,
    /// ...in at least this many training capture files.
    #[arg(long, default_value_t = 3)]
    min_files: usize,
    /// Percentage of capture files held out for testing (the split is by file, never by flow).
    #[arg(long, default_value_t = 25)]
    test_percent: u64,
    /// Seed of the split and of training.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// MLP epochs.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
}

/// A tree stage's size as `ROUNDS,LEAVES,DEPTH,LEARNING_RATE` (depth -1: no limit).
fn tree_size(text: &str) -> Result<FastParams, String> {
    let parts: Vec<&str> = text.split(',').collect();
    let [r, l, d, lr] = parts[..] else {
        return Err(format!(
            "{text:?}: expected ROUNDS,LEAVES,DEPTH,LEARNING_RATE like 5,16,4,0.25"
        ));
    };
    let bad = |what: &str| format!("{text:?}: {what} is not a number");
    Ok(FastParams {
        rounds: r.parse().map_err(|_| bad("rounds"))?,
        leaves: l.parse().map_err(|_| bad("leaves"))?,
        max_depth: d.parse().map_err(|_| bad("depth"))?,
        learning_rate: lr.parse().map_err(|_| bad("learning rate"))?,
    })
}

#[derive(Subcommand)]
enum Command {
    /// Labeled captures -> first (optional) + fast LightGBM stages + slow MLP (ONNX) -> a
    /// models directory.
    Train {
        #[command(flatten)]
        split: SplitArgs,
        /// Features of a 1-packet first stage (none by default).
        #[arg(long)]
        first_features: Option<FeatureSpec>,
        /// Its size.
        #[arg(long, value_parser = tree_size, default_value = "3,16,4,0.3")]
        first_size: FastParams,
        /// Fast-stage features.
        #[arg(long, default_value = "stats,ports,name:64")]
        fast_features: FeatureSpec,
        /// Packets the fast stage waits for.
        #[arg(long, default_value_t = 4)]
        fast_packets: u32,
        /// Its size.
        #[arg(long, value_parser = tree_size, default_value = "5,16,4,0.25")]
        fast_size: FastParams,
        /// Slow-stage features.
        #[arg(
            long,
            default_value = "stats,ports,name:64,nprint,nprint-masked,payload:32"
        )]
        slow_features: FeatureSpec,
        /// Packets the slow stage waits for.
        #[arg(long, default_value_t = 4)]
        slow_packets: u32,
        /// MLP hidden layer widths.
        #[arg(long, value_delimiter = ',', default_values_t = [128, 64])]
        hidden: Vec<usize>,
    },
    /// Trains candidates over features x packets x size for every stage, prints their Pareto
    /// fronts and baselines, and writes the picked stages as a models directory (with
    /// craft.md).
    Craft {
        #[command(flatten)]
        split: SplitArgs,
        /// Cost budget of each inline stage (first, fast), microseconds per flow.
        #[arg(long, default_value_t = 2.0)]
        inline_budget_us: f64,
        /// Cost budget of the slow model, microseconds per flow at batch 32.
        #[arg(long, default_value_t = 15.0)]
        slow_budget_us: f64,
    },
    /// Leave-one-source-out: trains the recipe of a models directory without each source,
    /// calibrates it on the rest, scores it on the source left out; writes loso.json and
    /// loso.md into the models directory.
    Loso {
        /// Models directory whose metrics.json recipe to check.
        #[arg(long)]
        models: PathBuf,
        /// Data folder.
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        /// Sources to leave out one at a time (`a+b` leaves out two together).
        #[arg(long, value_delimiter = ',', default_values_t = loso::DEFAULT_GROUPS.map(String::from))]
        groups: Vec<String>,
        /// Calibration target: cascade within this of slow-only (macro-F1 and accuracy).
        #[arg(long, default_value_t = 0.005)]
        max_drop: f64,
    },
}

impl SplitArgs {
    fn options(&self) -> SplitOptions {
        SplitOptions {
            task: self.task,
            min_flows: self.min_flows,
            min_files: self.min_files,
            holdout: Holdout::Files {
                percent: self.test_percent,
                seed: self.seed,
            },
        }
    }

    fn out(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("models").join(self.task.name()))
    }

    fn corpus(&self) -> anyhow::Result<Corpus> {
        read_corpus(&self.data, self.task)
    }
}

/// The labeled flows of a data folder, with a note of what was read.
fn read_corpus(data: &Path, task: Task) -> anyhow::Result<Corpus> {
    note(&format!(
        "reading the labeled captures of {}",
        data.display()
    ));
    let corpus = Corpus::build(data, task)?;
    let r = &corpus.report;
    note(&format!(
        "{} labeled flows ({} exact duplicates removed), {} captures missing, {} unreadable",
        corpus.examples.len(),
        r.duplicates_removed,
        r.missing.len(),
        r.unreadable.len()
    ));
    Ok(corpus)
}

fn run(command: Command, line: String) -> anyhow::Result<()> {
    let what = match command {
        Command::Train { .. } => "train",
        Command::Craft { .. } => "craft",
        Command::Loso { .. } => "loso",
    };
    STEPS.begin(match command {
        Command::Loso { .. } => "reading the recipe",
        _ => "reading the labeled captures",
    });
    let ticker = Ticker::start(what, || STEPS.line());
    match command {
        Command::Train {
            split,
            first_features,
            first_size,
            fast_features,
            fast_packets,
            fast_size,
            slow_features,
            slow_packets,
            hidden,
        } => {
            let [h0, h1] = hidden[..] else {
                anyhow::bail!("--hidden takes two widths, like 128,64");
            };
            let out = split.out();
            let opts = TrainOptions {
                split: split.options(),
                out: out.clone(),
                first: first_features.map(|features| TreeStage {
                    features,
                    packets: 1,
                    params: first_size,
                }),
                fast: TreeStage {
                    features: fast_features,
                    packets: fast_packets,
                    params: fast_size,
                },
                slow: FeatureSpec {
                    packets: slow_packets,
                    ..slow_features
                },
                mlp: mlp::TrainConfig {
                    hidden: [h0, h1],
                    epochs: split.epochs,
                    seed: split.seed,
                    ..mlp::TrainConfig::default()
                },
                waits_ms: DEFAULT_WAITS_MS,
                command: line,
            };
            let report = pipeline::train(&split.corpus()?, &opts)?;
            drop(ticker);
            pipeline::print(&report, &out);
        }
        Command::Craft {
            split,
            inline_budget_us,
            slow_budget_us,
        } => {
            let out = split.out();
            let opts = CraftOptions {
                split: split.options(),
                out: out.clone(),
                inline_budget_us,
                slow_budget_us,
                epochs: split.epochs,
                waits_ms: DEFAULT_WAITS_MS,
                seed: split.seed,
                command: line,
            };
            let crafted = craft::craft(&split.corpus()?, &opts)?;
            drop(ticker);
            eprint!("{}", craft::table(&opts, &crafted));
            pipeline::print(&crafted.report, &out);
        }
        Command::Loso {
            models,
            data,
            groups,
            max_drop,
        } => {
            let metrics = models.join("metrics.json");
            let text = std::fs::read_to_string(&metrics)
                .with_context(|| format!("reading {}", metrics.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", metrics.display()))?;
            let recipe: Recipe =
                serde_json::from_value(value["recipe"].clone()).with_context(|| {
                    format!(
                        "{}: no recipe (retrain with this version)",
                        metrics.display()
                    )
                })?;
            let task = Task::from_name(&recipe.task)
                .with_context(|| format!("unknown task {:?}", recipe.task))?;
            let corpus = read_corpus(&data, task)?;
            let folds = loso::run(&corpus, &recipe, &groups, Target::MaxDrop(max_drop))?;
            drop(ticker);
            loso::write(&models, &line, &folds)?;
            eprint!("{}", loso::table(&folds));
            eprintln!(
                "serveflow-train: written {} and {}",
                models.join("loso.json").display(),
                models.join("loso.md").display()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let line = std::iter::once("serveflow-train".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let cli = Cli::parse();
    ticker::set_quiet(cli.quiet);
    match run(cli.command, line) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serveflow-train: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
