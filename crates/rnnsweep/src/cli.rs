//! The command line: one subcommand per module in `commands/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::*;

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
    Train(train::TrainArgs),
    /// Score a CSV with a trained model: `id,probability,label`.
    Predict(predict::PredictArgs),
    /// Run (or continue) the sweep a spec describes.
    Run(run::RunArgs),
    /// Continue a study from its file, with the spec stored in it.
    Resume(run::ResumeArgs),
    /// Rank a study's trials.
    Leaderboard(leaderboard::LeaderboardArgs),
    /// List the studies in a file.
    Studies(studies::StudiesArgs),
    /// One trial with its per-epoch history.
    Show(show::ShowArgs),
    /// Queue a trial with given parameter values (warm start from known configurations).
    Enqueue(enqueue::EnqueueArgs),
    /// Queue failed trials again with their parameters.
    Retry(retry::RetryArgs),
    /// PNG and SVG pictures of a study.
    Plot(plot::PlotArgs),
    /// Every trial (or every epoch) as CSV or JSON.
    Export(export::ExportArgs),
    /// A trained model (or ensemble) as ONNX, with its tokenizer beside it.
    ExportModel(export_model::ExportModelArgs),
    /// Train the best configurations again with fresh seeds; rank by the mean.
    Confirm(confirm::ConfirmArgs),
    /// The best trial's parameters; with --retrain, the final model.
    Best(best::BestArgs),
    /// Copy a study between SQLite and PostgreSQL (either way).
    CopyStudy(copy_study::CopyArgs),
    /// Run one trial (started by `rnnsweep run`; reads RNNSWEEP_TRIAL).
    #[command(hide = true)]
    Worker,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Rows, positives, vocabulary, longest sequence, class weights; optionally the padded ids.
    Inspect(inspect::InspectArgs),
}

pub fn run() -> anyhow::Result<ExitCode> {
    let ok = |()| ExitCode::SUCCESS;
    Ok(match Cli::parse().command {
        Command::Data {
            command: DataCommand::Inspect(args),
        } => inspect::run(&args).map(ok)?,
        Command::Train(args) => train::run(&args).map(ok)?,
        Command::Predict(args) => predict::run(&args).map(ok)?,
        Command::Run(args) => run::run(&args)?,
        Command::Resume(args) => run::resume(&args)?,
        Command::Leaderboard(args) => leaderboard::run(&args).map(ok)?,
        Command::Studies(args) => studies::run(&args).map(ok)?,
        Command::Show(args) => show::run(&args).map(ok)?,
        Command::Enqueue(args) => enqueue::run(&args).map(ok)?,
        Command::Retry(args) => retry::run(&args).map(ok)?,
        Command::Confirm(args) => confirm::run(&args)?,
        Command::Plot(args) => plot::run(&args).map(ok)?,
        Command::Export(args) => export::run(&args).map(ok)?,
        Command::ExportModel(args) => export_model::run(&args).map(ok)?,
        Command::Best(args) => best::run(&args).map(ok)?,
        Command::CopyStudy(args) => copy_study::run(&args).map(ok)?,
        Command::Worker => worker::run()?,
    })
}
