//! `rnnsweep export-model`: a trained model (or an ensemble) as ONNX, for onnxruntime and
//! anything else that reads ONNX; its tokenizer beside it in Keras's format.

use std::path::PathBuf;

use anyhow::Context;
use rnnsweep_model::artifact::Predictor;

#[derive(clap::Args)]
pub struct ExportModelArgs {
    /// A model folder written by `train` or `best --retrain` (one model or an ensemble).
    #[arg(long)]
    pub model: PathBuf,
    /// The ONNX file to write (`model.onnx`); `model.tokenizer.json` goes beside it.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &ExportModelArgs) -> anyhow::Result<()> {
    if args.out.extension().is_none_or(|e| e != "onnx") {
        anyhow::bail!(
            "--out {}: name the file with `.onnx` (its tokenizer is written beside it as \
             <name>.tokenizer.json)",
            args.out.display()
        );
    }
    let model = Predictor::load(&args.model, &rnnsweep_model::device::open("cpu")?)
        .with_context(|| format!("--model {}", args.model.display()))?;
    let exported = rnnsweep_model::onnx::export(&model, &args.out)?;
    println!(
        "{} written ({} member{}, {} nodes, opset {}); tokenizer: {}",
        exported.model.display(),
        exported.members,
        if exported.members == 1 { "" } else { "s" },
        exported.nodes,
        rnnsweep_model::onnx::OPSET,
        exported.tokenizer.display()
    );
    for (input, path) in &exported.view_tokenizers {
        println!("tokenizer of the input `{input}`: {}", path.display());
    }
    println!(
        "score a CSV without rnnsweep: python3 scripts/onnx_predict.py {} INPUT.csv OUT.csv",
        exported.model.display()
    );
    Ok(())
}
