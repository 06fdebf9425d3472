//! `rnnsweep enqueue`: a trial queued with given values (Optuna's `enqueue_trial`).

use anyhow::bail;
use rnnsweep_search::results::study::Study;
use rnnsweep_search::space::Point;
use rnnsweep_search::store::StorageLocation;

#[derive(clap::Args)]
pub struct EnqueueArgs {
    /// The study: a file, `sqlite:///file.db` or `postgresql://…`.
    pub db: StorageLocation,
    #[arg(long)]
    pub study: Option<String>,
    /// A parameter's value (YAML), e.g. `--set optimizer=adam --set learning_rate=0.002`;
    /// every parameter of the space (constants may be left out).
    #[arg(long = "set", value_name = "NAME=VALUE", required = true)]
    pub set: Vec<String>,
}

pub fn run(args: &EnqueueArgs) -> anyhow::Result<()> {
    let mut values = Point::new();
    for a in &args.set {
        let (name, value) = rnnsweep_model::config::ModelConfig::parse_assignment(a)?;
        if values.insert(name.clone(), value).is_some() {
            bail!("--set {name}: given twice");
        }
    }
    let mut study = Study::open(&args.db, args.study.as_deref())?;
    let number = study.enqueue(&values)?;
    println!(
        "queued trial {number} in study `{}`; `rnnsweep resume {}` (or run the spec) runs it first",
        study.name, args.db
    );
    Ok(())
}
