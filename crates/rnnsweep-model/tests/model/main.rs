//! The model crate from outside: Keras-exact tokenizer output, and training runs on the
//! bundled sample (loss curves, checkpoints, reproducibility). One test binary, so candle is
//! linked once.

mod device;
mod keras_tokenizer;
mod net_device;
mod train;
