//! `rnnsweep studies`: the studies in a file or database, with counts and best values.

use rnnsweep_search::store::StorageLocation;

#[derive(clap::Args)]
pub struct StudiesArgs {
    pub db: StorageLocation,
}

pub fn run(args: &StudiesArgs) -> anyhow::Result<()> {
    let store = args.db.open_existing()?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "study",
        "direction",
        "trials",
        "complete",
        "pruned",
        "fail",
        "running",
        "waiting",
        "best",
    ]);
    for s in store.studies()? {
        let c = |k: &str| s.counts.get(k).copied().unwrap_or(0).to_string();
        table.add_row(vec![
            s.name.clone(),
            format!("{:?}", s.direction).to_lowercase(),
            s.counts.values().sum::<usize>().to_string(),
            c("COMPLETE"),
            c("PRUNED"),
            c("FAIL"),
            c("RUNNING"),
            c("WAITING"),
            s.best.map_or("-".into(), rnnsweep_search::display::sig4),
        ]);
    }
    println!("{table}");
    Ok(())
}
