//! `serveflow-train`: trains a models directory from labeled captures (`train`, one fixed
//! configuration) or crafts one (`craft`, a grid of candidates and their Pareto front).

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use serveflow::features::FeatureSpec;
use serveflow_train::{
    craft::{self, CraftOptions},
    dataset::Task,
    mlp,
    pipeline::{self, FastParams, SplitOptions, TrainOptions},
};

#[derive(Parser)]
#[command(
    name = "serveflow-train",
    about = "Train serveflow's fast and slow models from labeled captures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Data, labels and split.
#[derive(Args)]
struct SplitArgs {
    /// Task: service (nDPI app names) or device (IoT Sentinel device types).
    #[arg(long, value_enum)]
    task: Task,
    /// Data folder with the captures and labels/ (the ../shared/data layout).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Output models directory [default: models/<task>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// A label needs this many flows to be its own class (others are grouped as `other`).
    #[arg(long, default_value_t = 50)]
    min_flows: usize,
    /// ...in at least this many capture files.
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

#[derive(Subcommand)]
enum Command {
    /// Labeled captures -> fast LightGBM + slow MLP (ONNX) -> a models directory.
    Train {
        #[command(flatten)]
        split: SplitArgs,
        /// Fast-stage features.
        #[arg(long, default_value = "stats")]
        fast_features: FeatureSpec,
        /// Packets the fast stage waits for.
        #[arg(long, default_value_t = 2)]
        fast_packets: u32,
        /// Boosting rounds of the fast model (trees = rounds x classes).
        #[arg(long, default_value_t = 8)]
        fast_rounds: u32,
        /// Leaves per tree of the fast model.
        #[arg(long, default_value_t = 8)]
        fast_leaves: u32,
        /// Slow-stage features.
        #[arg(long, default_value = "stats,nprint,nprint-masked,payload:32")]
        slow_features: FeatureSpec,
        /// Packets the slow stage waits for.
        #[arg(long, default_value_t = 4)]
        slow_packets: u32,
        /// MLP hidden layer widths.
        #[arg(long, value_delimiter = ',', default_values_t = [128, 64])]
        hidden: Vec<usize>,
    },
    /// Trains candidates over features x packets x size, prints their Pareto front, and
    /// writes the picked fast and slow models as a models directory (with craft.md).
    Craft {
        #[command(flatten)]
        split: SplitArgs,
        /// Cost budget of the fast model, microseconds per flow.
        #[arg(long, default_value_t = 2.0)]
        fast_budget_us: f64,
        /// Cost budget of the slow model, microseconds per flow at batch 32.
        #[arg(long, default_value_t = 15.0)]
        slow_budget_us: f64,
    },
}

impl SplitArgs {
    fn options(&self) -> SplitOptions {
        SplitOptions {
            data: self.data.clone(),
            task: self.task,
            min_flows: self.min_flows,
            min_files: self.min_files,
            test_percent: self.test_percent,
            seed: self.seed,
        }
    }

    fn out(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("models").join(self.task.name()))
    }
}

fn run(command: Command, line: String) -> anyhow::Result<()> {
    match command {
        Command::Train {
            split,
            fast_features,
            fast_packets,
            fast_rounds,
            fast_leaves,
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
                fast: FeatureSpec {
                    packets: fast_packets,
                    ..fast_features
                },
                slow: FeatureSpec {
                    packets: slow_packets,
                    ..slow_features
                },
                fast_params: FastParams {
                    rounds: fast_rounds,
                    leaves: fast_leaves,
                },
                mlp: mlp::TrainConfig {
                    hidden: [h0, h1],
                    epochs: split.epochs,
                    seed: split.seed,
                    ..mlp::TrainConfig::default()
                },
                command: line,
            };
            let report = pipeline::train(&opts)?;
            pipeline::print(&report, &out);
        }
        Command::Craft {
            split,
            fast_budget_us,
            slow_budget_us,
        } => {
            let out = split.out();
            let opts = CraftOptions {
                split: split.options(),
                out: out.clone(),
                fast_budget_us,
                slow_budget_us,
                epochs: split.epochs,
                command: line,
            };
            let (candidates, report) = craft::craft(&opts)?;
            eprint!("{}", craft::table(&opts, &candidates, &report));
            pipeline::print(&report, &out);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let line = std::iter::once("serveflow-train".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    match run(Cli::parse().command, line) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serveflow-train: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
