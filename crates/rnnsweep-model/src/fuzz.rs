//! Property-test support shared by the crates' hostile-input tests (test builds only).

use std::cell::Cell;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};

/// Runs `test` on `cases` generated inputs (no failure files, a fixed seed so CI runs are
/// repeatable) and returns how many ran; a failing case panics with its shrunk input.
pub fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> TestCaseResult) -> usize
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let count = Cell::new(0usize);
    if let Err(e) = runner.run(&strategy, |v| {
        count.set(count.get() + 1);
        test(v)
    }) {
        panic!("{e}");
    }
    count.get()
}
