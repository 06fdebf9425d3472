//! `rnnsweep run` and `rnnsweep resume`: a sweep, from a spec or from the spec stored in a
//! study.

use std::path::PathBuf;
use std::process::ExitCode;

use rnnsweep_search::results::study::Study;
use rnnsweep_search::spec::Spec;
use rnnsweep_search::store::StorageLocation;

use crate::sweeping::{sweep, ExecArgs};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The sweep spec (YAML).
    pub spec: PathBuf,
    /// Where the study lives, instead of the spec's `storage`: an SQLite file,
    /// `sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://user@host:port/db`.
    #[arg(long)]
    pub storage: Option<StorageLocation>,
    /// Continue an existing study even though its search space differs from this spec.
    #[arg(long)]
    pub force_new_space: bool,
    /// Check the spec and the data and print the plan (space, first trials, devices, cost per
    /// trial); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(clap::Args)]
pub struct ResumeArgs {
    /// The study: a file, `sqlite:///file.db` or `postgresql://…`.
    pub db: StorageLocation,
    /// Which study (needed when the file holds several).
    #[arg(long)]
    pub study: Option<String>,
    #[command(flatten)]
    pub exec: ExecArgs,
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut spec = Spec::load(&args.spec)?;
    if let Some(s) = &args.storage {
        spec.storage = s.clone();
    }
    sweep(&mut spec, args.force_new_space, args.dry_run, &args.exec)
}

pub fn resume(args: &ResumeArgs) -> anyhow::Result<ExitCode> {
    let study = Study::open(&args.db, args.study.as_deref())?;
    let mut spec = study.stored_spec()?;
    drop(study);
    sweep(&mut spec, false, false, &args.exec)
}
