#!/usr/bin/env bash
# The project's test command: formatting, lints as errors, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
# No module circle in any crate (the checker first proves it can find one).
python3 scripts/check_modules.py --self-test
python3 scripts/check_modules.py
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
