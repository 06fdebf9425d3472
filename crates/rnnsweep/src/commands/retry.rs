//! `rnnsweep retry`: failed trials queued again with their values.

use rnnsweep_search::results::study::{RetrySelection, Study};
use rnnsweep_search::store::StorageLocation;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["failed", "trial"])))]
pub struct RetryArgs {
    /// The study: a file, `sqlite:///file.db` or `postgresql://…`.
    pub db: StorageLocation,
    #[arg(long)]
    pub study: Option<String>,
    /// Queue every failed trial again (those not already re-queued).
    #[arg(long)]
    pub failed: bool,
    /// Queue this failed trial again.
    #[arg(long)]
    pub trial: Option<i64>,
}

pub fn run(args: &RetryArgs) -> anyhow::Result<()> {
    let mut study = Study::open(&args.db, args.study.as_deref())?;
    let which = match args.trial {
        Some(n) => RetrySelection::Trial(n),
        None => RetrySelection::AllFailed,
    };
    let queued = study.retry(which)?;
    if queued.is_empty() {
        println!("study `{}` has no failed trial to retry", study.name);
    }
    for (failed, number) in queued {
        println!("trial {failed} queued again as trial {number}");
    }
    Ok(())
}
