//! Against a real PostgreSQL server (`scripts/start-postgres.sh` starts one; `.ci/run` does):
//! drivers on "three machines" sharing one study, one killed mid-trial; copying studies.
//! The server's URL comes from RNNSWEEP_TEST_POSTGRES; without it these tests say so and pass
//! only outside CI.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::common::*;
use rnnsweep_search::store::{StorageLocation, TrialState};

/// A fresh database on the test server for one test.
fn database(tag: &str) -> Option<String> {
    let Ok(url) = std::env::var("RNNSWEEP_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("CI").is_none()
                && std::env::var_os("RNNSWEEP_REQUIRE_POSTGRES").is_none(),
            "PostgreSQL was expected (CI or RNNSWEEP_REQUIRE_POSTGRES) but RNNSWEEP_TEST_POSTGRES is not set (scripts/start-postgres.sh)"
        );
        eprintln!("RNNSWEEP_TEST_POSTGRES is not set: skipping (eval \"$(scripts/start-postgres.sh)\" to run)");
        return None;
    };
    let name = format!("t_{tag}_{}", std::process::id());
    let mut admin =
        postgres::Client::connect(&url, postgres::NoTls).expect("test server reachable");
    // One statement per call: DROP/CREATE DATABASE cannot run inside a transaction block.
    admin
        .simple_query(&format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    admin
        .simple_query(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap();
    Some(format!("{base}/{name}"))
}

#[test]
fn three_drivers_share_a_postgres_study_and_recover_a_killed_ones_trial() {
    let Some(url) = database("drivers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "shared")
        .run_cap(9)
        .sleep(0.3)
        .params("  x: {distribution: uniform, min: 0, max: 1}\n  epochs: {value: 3}\n")
        .top("resources: {threads_per_trial: 1}\n")
        .write();
    let mut drivers: Vec<_> = (0..3)
        .map(|_| {
            rnnsweep()
                .current_dir(workdir.path())
                .arg("run")
                .arg(&spec)
                .arg("--storage")
                .arg(&url)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // "Machine A" dies with SIGKILL in the middle of a trial.
    let out = drivers[0].stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains(" epoch 1: ") {
            break;
        }
    }
    drivers[0].kill().unwrap();
    drivers[0].wait().unwrap();
    for d in drivers.drain(1..) {
        let o = d.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let store = StorageLocation::parse(&url).unwrap().open().unwrap();
    let id = store.study_id("shared").unwrap().unwrap();
    let all = store.trials(id).unwrap();
    let complete: Vec<_> = all
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .collect();
    assert_eq!(complete.len(), 9, "exactly run_cap finished");
    let xs: HashSet<u64> = complete.iter().map(|t| param(t, "x").to_bits()).collect();
    assert_eq!(xs.len(), 9, "no trial ran twice");
    let failed: Vec<_> = all.iter().filter(|t| t.state == TrialState::Fail).collect();
    assert_eq!(failed.len(), 1, "the killed driver's trial");
    assert!(failed[0].system_attrs["fail_reason"]
        .as_str()
        .unwrap()
        .starts_with("heartbeat stopped"));
    assert!(
        xs.contains(&param(failed[0], "x").to_bits()),
        "the killed trial was run again"
    );
    assert_eq!(
        count(&all, TrialState::Running) + count(&all, TrialState::Waiting),
        0
    );
    // Trial folders of a database study go to results/, not to a folder named like the URL.
    let first = all.iter().find(|t| t.number == 0).unwrap();
    let folder = first.system_attrs["rnnsweep:trial_dir"].as_str().unwrap();
    assert!(folder.starts_with("results/shared/"), "{folder}");
    assert!(workdir.path().join(folder).join("trial.json").exists());
    assert!(!workdir.path().join("postgresql:").exists());
}

#[test]
fn a_study_copies_from_sqlite_to_postgres_and_back_unchanged() {
    let Some(url) = database("copy") else { return };
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "laptop")
        .method("grid")
        .run_cap(10)
        .params("  x: {values: [0.2, 0.4, 0.6]}\n  fail_on: {value: 0.4}\n")
        .write();
    run_ok(rnnsweep().arg("run").arg(&spec));
    let db = dir.path().join("laptop.db");
    let back = dir.path().join("back.db");
    for (from, to) in [
        (db.display().to_string(), url.clone()),
        (
            url.clone(), // SQLAlchemy's absolute form: four slashes.
            format!("sqlite:///{}", back.display()),
        ),
    ] {
        let o = run_ok(rnnsweep().args([
            "copy-study",
            "--from",
            &from,
            "--to",
            &to,
            "--study",
            "laptop",
        ]));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "copied study `laptop`: 3 trials"
        );
    }
    let leaderboard = |loc: &str| {
        let o = run_ok(rnnsweep().args(["leaderboard", loc, "--format", "csv"]));
        String::from_utf8(o.stdout).unwrap()
    };
    let original = leaderboard(&db.display().to_string());
    assert_eq!(leaderboard(&url), original);
    assert_eq!(leaderboard(&back.display().to_string()), original);
    let t = trials(&back, "laptop");
    assert_eq!(
        t.iter().map(|t| t.state).collect::<Vec<_>>(),
        trials(&db, "laptop")
            .iter()
            .map(|t| t.state)
            .collect::<Vec<_>>()
    );
    assert_eq!(t.iter().map(|t| t.intermediate.len()).sum::<usize>(), 6);
    // Copying onto a study that has trials is refused.
    let o = rnnsweep()
        .args([
            "copy-study",
            "--from",
            &db.display().to_string(),
            "--to",
            &url,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("already exists there with 3 trials; nothing was copied"));
}
