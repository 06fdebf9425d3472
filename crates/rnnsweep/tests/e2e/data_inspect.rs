use crate::common::*;

#[test]
fn inspect_prints_summary_and_writes_padded_ids() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "id,label,tweet\n10,0,b a\n11,1,c b\n12,0,a c b d\n").unwrap();
    let out = dir.path().join("ids.txt");
    let o = run_ok(
        rnnsweep()
            .args(["data", "inspect", "--input"])
            .arg(&csv)
            .args(["--max-words", "4", "--out"])
            .arg(&out),
    );
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(stdout.contains("rows              3"), "{stdout}");
    assert!(stdout.contains("positives         1 (33.33 %)"), "{stdout}");
    assert!(
        stdout.contains("class weights     0: 1.0000  1: 2.0000"),
        "{stdout}"
    );
    assert!(stdout.contains("unique tokens     4"), "{stdout}");
    assert!(stdout.contains("longest sequence  3"), "{stdout}");
    // b=1, a=2, c=3 (d=4 is cut by max_words 4); post padding to the longest row.
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "10,1 2 0\n11,3 1 0\n12,2 3 1\n"
    );
}

#[test]
fn inspect_bad_csv_names_file_and_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "id,label,tweet\n1,0,fine\n2,yes,bad label\n").unwrap();
    let o = rnnsweep()
        .args(["data", "inspect", "--input"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        format!(
            "error: {}:3: label `yes` in column `label` is not 0 or 1",
            csv.display()
        )
    );
}
