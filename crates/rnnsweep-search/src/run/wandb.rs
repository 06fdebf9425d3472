//! Trials given W&B's way: the `command` list with W&B's macros expanded for one trial, the
//! parameters nested as W&B's config nests them, and rnnsweep's stand-in `wandb` module that
//! turns a W&B script's `wandb.log` calls into the worker protocol.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::space::Point;
use crate::spec::WandbProgram;

/// The `wandb` package a W&B script imports instead of the real one (see its docstring).
const SHIM: &str = include_str!("wandb_shim.py");

/// Dotted parameter names (`optimizer.lr`) as the nested dicts W&B's config holds.
pub fn nested(params: &Point) -> Value {
    let mut root = Map::new();
    for (name, value) in params {
        let mut node = &mut root;
        let mut keys = name.split('.').peekable();
        while let Some(key) = keys.next() {
            if keys.peek().is_none() {
                node.insert(key.to_string(), value.clone());
                break;
            }
            let child = node
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            node = child.as_object_mut().expect("made an object above");
        }
    }
    Value::Object(root)
}

/// A value as Python's `str()` writes it: W&B's agent formats `--name=value` that way.
fn python_str(v: &Value) -> String {
    fn repr(v: &Value) -> String {
        match v {
            Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            other => python_str(other),
        }
    }
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("'{k}': {}", repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// The trial's command line: each element with W&B's macros replaced (`${args}` and its kin
/// become several elements; an element that expands to nothing is dropped). `${args_json_file}`
/// is written into `trial_dir`.
pub fn command_line(
    program: &WandbProgram,
    params: &Point,
    trial_dir: &Path,
) -> std::io::Result<Vec<String>> {
    let Value::Object(config) = nested(params) else {
        unreachable!("nested() makes an object")
    };
    let mut args = Vec::new();
    let mut no_hyphens = Vec::new();
    let mut no_boolean_flags = Vec::new();
    for (name, value) in &config {
        let text = python_str(value);
        args.push(format!("--{name}={text}"));
        no_hyphens.push(format!("{name}={text}"));
        match value {
            Value::Bool(true) => no_boolean_flags.push(format!("--{name}")),
            Value::Bool(false) => {}
            _ => no_boolean_flags.push(format!("--{name}={text}")),
        }
    }
    let json = Value::Object(config).to_string();
    let program_path = program
        .program
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let interpreter = program
        .program
        .as_ref()
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .map(|_| "python3".to_string())
        .unwrap_or_default();
    let mut argv = Vec::new();
    for element in &program.command {
        let many = match element.as_str() {
            "${args}" => Some(args.clone()),
            "${args_no_hyphens}" => Some(no_hyphens.clone()),
            "${args_no_boolean_flags}" => Some(no_boolean_flags.clone()),
            _ => None,
        };
        if let Some(many) = many {
            argv.extend(many);
            continue;
        }
        let mut text = element
            .replace("${env}", "/usr/bin/env")
            .replace("${interpreter}", &interpreter)
            .replace("${program}", &program_path)
            .replace("${args_json}", &json);
        if text.contains("${args_json_file}") {
            let file = trial_dir.join("args.json");
            std::fs::write(&file, &json)?;
            text = text.replace("${args_json_file}", &file.display().to_string());
        }
        if !text.is_empty() {
            argv.push(text);
        }
    }
    Ok(argv)
}

/// Writes the stand-in `wandb` package into the trial's folder and returns the folder to put
/// first on `PYTHONPATH`.
pub fn install_shim(trial_dir: &Path) -> std::io::Result<PathBuf> {
    let root = trial_dir.join("python");
    let package = root.join("wandb");
    std::fs::create_dir_all(&package)?;
    std::fs::write(package.join("__init__.py"), SHIM)?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn point(v: Value) -> Point {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn dotted_names_become_the_nested_config_w_and_b_gives_a_script() {
        let p =
            point(json!({"batch_size": 32, "optimizer.lr": 0.001, "optimizer.nadam.beta": 0.9}));
        assert_eq!(
            nested(&p),
            json!({"batch_size": 32, "optimizer": {"lr": 0.001, "nadam": {"beta": 0.9}}})
        );
    }

    #[test]
    fn the_default_command_is_w_and_b_s_with_python_s_spelling_of_values() {
        let dir = tempfile::tempdir().unwrap();
        let program = WandbProgram {
            program: Some(PathBuf::from("exp/train.py")),
            command: ["${env}", "${interpreter}", "${program}", "${args}"]
                .map(String::from)
                .to_vec(),
            shim: true,
        };
        let p = point(json!({"base": 10, "increment": 0.1, "nested.on": true, "name": "adam"}));
        assert_eq!(
            command_line(&program, &p, dir.path()).unwrap(),
            [
                "/usr/bin/env",
                "python3",
                "exp/train.py",
                "--base=10",
                "--increment=0.1",
                "--name=adam",
                "--nested={'on': True}",
            ]
        );
    }

    #[test]
    fn every_macro_expands_as_w_and_b_s_agent_expands_it() {
        let dir = tempfile::tempdir().unwrap();
        let program = WandbProgram {
            program: Some(PathBuf::from("run.sh")),
            command: [
                "${interpreter}",
                "${program}",
                "${args_no_hyphens}",
                "${args_no_boolean_flags}",
                "--json=${args_json}",
                "${args_json_file}",
            ]
            .map(String::from)
            .to_vec(),
            shim: false,
        };
        let p = point(json!({"flag": true, "off": false, "x": 2}));
        let file = dir.path().join("args.json");
        assert_eq!(
            command_line(&program, &p, dir.path()).unwrap(),
            [
                "run.sh".to_string(),
                "flag=True".into(),
                "off=False".into(),
                "x=2".into(),
                "--flag".into(),
                "--x=2".into(),
                r#"--json={"flag":true,"off":false,"x":2}"#.into(),
                file.display().to_string(),
            ]
        );
        assert_eq!(
            std::fs::read_to_string(file).unwrap(),
            r#"{"flag":true,"off":false,"x":2}"#
        );
    }
}
