"""GLUE data: TSV/TFDS readers, tokenization and length-bucketed batching."""
