//! `rnnsweep copy-study`: studies moved between SQLite and PostgreSQL, trials as they are.

use rnnsweep_search::results::study::copy_studies;
use rnnsweep_search::store::StorageLocation;

#[derive(clap::Args)]
pub struct CopyArgs {
    /// Source: an SQLite file, `sqlite:///path.db`, or `postgresql://user@host:port/db`.
    #[arg(long)]
    pub from: StorageLocation,
    /// Destination, in the same forms (created if needed).
    #[arg(long)]
    pub to: StorageLocation,
    /// Copy this study only (default: every study in the source).
    #[arg(long)]
    pub study: Option<String>,
}

/// Copies studies between stores (SQLite ↔ PostgreSQL), trials as they are.
pub fn run(args: &CopyArgs) -> anyhow::Result<()> {
    for (name, trials) in copy_studies(&args.from, &args.to, args.study.as_deref())? {
        println!("copied study `{name}`: {trials} trials");
    }
    Ok(())
}
