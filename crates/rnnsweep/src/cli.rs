use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Bad input or a failed command.
pub const EXIT_ERROR: u8 = 1;

#[derive(Parser)]
#[command(
    name = "rnnsweep",
    version,
    about = "Hyperparameter search for recurrent text classifiers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Look at a data file the way the model will see it.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Train one configuration and write a model directory.
    Train(crate::train_cmd::TrainArgs),
    /// Score a CSV with a trained model: `id,probability,label`.
    Predict(crate::train_cmd::PredictArgs),
    /// Run (or continue) the sweep a spec describes.
    Run(crate::sweep_cmd::RunArgs),
    /// Continue a study from its file, with the spec stored in it.
    Resume(crate::sweep_cmd::ResumeArgs),
    /// Rank a study's trials.
    Leaderboard(crate::sweep_cmd::LeaderboardArgs),
    /// List the studies in a file.
    Studies(crate::sweep_cmd::StudiesArgs),
    /// One trial with its per-epoch history.
    Show(crate::sweep_cmd::ShowArgs),
    /// Queue a trial with given parameter values (warm start from known configurations).
    Enqueue(crate::sweep_cmd::EnqueueArgs),
    /// Queue failed trials again with their parameters.
    Retry(crate::sweep_cmd::RetryArgs),
    /// PNG and SVG pictures of a study.
    Plot(crate::report_cmd::PlotArgs),
    /// Every trial (or every epoch) as CSV or JSON.
    Export(crate::report_cmd::ExportArgs),
    /// The best trial's parameters; with --retrain, the final model.
    Best(crate::report_cmd::BestArgs),
    /// Copy a study between SQLite and PostgreSQL (either way).
    CopyStudy(crate::report_cmd::CopyArgs),
    /// Run one trial (started by `rnnsweep run`; reads RNNSWEEP_TRIAL).
    #[command(hide = true)]
    Worker,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Rows, positives, vocabulary, longest sequence, class weights; optionally the padded ids.
    Inspect(InspectArgs),
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// CSV file with a header (`id,label,tweet` by default; `label` may be absent).
    #[arg(long)]
    pub input: PathBuf,
    /// Keras `num_words`: keep word ids below this.
    #[arg(long, default_value_t = 5000)]
    pub max_words: usize,
    /// Sequence length (default: the longest tokenized row).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Write `id,` and the post-padded id sequence, one line per row.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "id")]
    pub id_column: String,
    #[arg(long, default_value = "label")]
    pub label_column: String,
    #[arg(long, default_value = "tweet")]
    pub text_column: String,
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Data {
            command: DataCommand::Inspect(args),
        } => crate::inspect::run(&args).map(|()| ExitCode::SUCCESS)?,
        Command::Train(args) => crate::train_cmd::train(&args).map(|()| ExitCode::SUCCESS)?,
        Command::Predict(args) => crate::train_cmd::predict(&args).map(|()| ExitCode::SUCCESS)?,
        Command::Run(args) => crate::sweep_cmd::run(&args)?,
        Command::Resume(args) => crate::sweep_cmd::resume(&args)?,
        Command::Leaderboard(args) => {
            crate::sweep_cmd::leaderboard(&args).map(|()| ExitCode::SUCCESS)?
        }
        Command::Studies(args) => crate::sweep_cmd::studies(&args).map(|()| ExitCode::SUCCESS)?,
        Command::Show(args) => crate::sweep_cmd::show(&args).map(|()| ExitCode::SUCCESS)?,
        Command::Enqueue(args) => crate::sweep_cmd::enqueue(&args).map(|()| ExitCode::SUCCESS)?,
        Command::Retry(args) => crate::sweep_cmd::retry(&args).map(|()| ExitCode::SUCCESS)?,
        Command::Plot(args) => crate::report_cmd::plot(&args).map(|()| ExitCode::SUCCESS)?,
        Command::Export(args) => crate::report_cmd::export(&args).map(|()| ExitCode::SUCCESS)?,
        Command::Best(args) => crate::report_cmd::best(&args).map(|()| ExitCode::SUCCESS)?,
        Command::CopyStudy(args) => {
            crate::report_cmd::copy_study(&args).map(|()| ExitCode::SUCCESS)?
        }
        Command::Worker => crate::worker_cmd::run()?,
    };
    Ok(code)
}
