"""fft: fine fine-tuning of pretrained BERT-family encoders in JAX/Flax."""
