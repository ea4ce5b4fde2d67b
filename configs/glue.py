"""Fine-tune a BERT-family encoder on one GLUE task (full fine-tuning).

Command lines:
  # Packaged all-MiniLM-L6-v2 on RTE, 3 epochs (about 10 minutes on 2 CPU cores):
  python -m fft.main --config=configs/glue.py:task=rte --workdir=runs/rte
  # Another task, another learning rate:
  python -m fft.main --config=configs/glue.py:task=cola --config.optim.lr=3e-5 --workdir=runs/cola
  # A local Hugging Face-format folder (config.json + model.safetensors + tokenizer files):
  python -m fft.main --config=configs/glue.py:task=stsb,model=/path/to/bert --workdir=runs/stsb
  # Smoke test: a 2-layer random-init model, a few steps, a slice of the data:
  python -m fft.main --config=configs/glue.py:task=rte,tiny --workdir=/tmp/fft_tiny
"""

from __future__ import annotations

import ml_collections

from configs import common

TINY_MODEL = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, task="rte", model="minilm", tiny=False, dtype="float32")
    config = ml_collections.ConfigDict()
    config.task = args.task
    config.seed = 0
    # Kind of the dropout key ('rbg', 'threefry2x32' or 'unsafe_rbg'); per-step and per-layer keys
    # are folded from it, and fft.models.dropout hashes each key into its mask, so the kind picks
    # which masks a seed gives, not their cost. Deterministic given the seed.
    config.dropout_rng = "rbg"

    config.data = {
        "source": "tsv",  # 'tsv' (GLUE directory layout) or 'tfds' (glue/<task>).
        "dir": str(common.SHIPPED_GLUE_DIR),
        "max_length": 128,
        "buckets": (),  # Padded lengths of eval (and unpacked train) batches; () picks a default set.
        # Training batches pack several examples per row (fft.data.packing): one or two batch
        # shapes per run instead of one per bucket, so far less compiling; same examples per step.
        "packing": True,
        "pack_length": 0,  # Tokens per packed row; 0 chooses from the data (>= longest example).
        "train_fraction": 1.0,  # First-class: the data-fraction experiments sweep it.
        "max_train_examples": 0,  # 0 keeps all (applied after train_fraction).
        "max_eval_examples": 0,
        "skip_malformed": False,
    }
    config.model = {
        "name": args.model,  # 'minilm' (packaged), a local HF folder, or a hub name if online.
        "dtype": args.dtype,  # Compute dtype; parameters stay float32.
        "random_init": ml_collections.ConfigDict(
            dict(enabled=False, tokenizer="minilm", **TINY_MODEL)
        ),
    }
    config.batch_size = 32
    config.eval_batch_size = 128
    config.num_epochs = 3.0
    config.num_train_steps = 0  # > 0 overrides num_epochs.
    config.optim = common.optim_config(lr=5e-5)
    config.partition = {
        # Which parameters train (fft.partition): full | head | bitfit | layernorm |
        # layers:<sel> (e.g. layers:top2, layers:4-5) | critical:<k> (needs distances_file).
        "preset": "full",
        "rules": "",  # Overrides preset: 'regex=label;regex=label', label 'frozen' = no training.
        "distances_file": "",  # distances.json of an earlier run (fft.analyze) for critical:<k>.
        "head_lr": 0.0,  # Learning rate of the 'head' group; 0 uses optim.lr.
        "feature_cache": False,  # Run the frozen bottom layers once per dataset (no dropout there).
    }
    config.supermask = {
        # Learn binary masks over the frozen pretrained weights (fft.supermask); overrides
        # `partition`: scores for the masked tensors + the head train, nothing else.
        "enabled": False,
        "rules": "",  # ';'-separated path regexes; '' = attention + FFN kernels of every layer.
        "extra_rules": "",  # e.g. 'embeddings/word_embeddings/embedding;pooler/dense/kernel'.
        # Top-level subtrees that train normally (AdamW at optim.lr) and are stored in float32 with
        # the masks; ';'-separated, '' = the model's head (BERT: classifier; DistilBERT:
        # pre_classifier;classifier). 'pooler;classifier' also trains BERT's pooler.
        "head_keys": "",
        "mode": "threshold",  # 'threshold' (score > threshold) or 'topk' (keep_fraction/tensor).
        "threshold": 0.0,
        "keep_fraction": 0.95,
        "init": "uniform",  # 'constant' | 'uniform' | 'magnitude'.
        "initial_sparsity": 0.05,
        "init_scale": 0.05,
        "score_lr": 1e-3,  # The head trains with optim.lr.
        "l1": 0.0,  # Pull kept scores down while a tensor is below target_sparsity.
        "target_sparsity": 0.0,
    }
    config.export_delta = True  # Write the trained leaves to <workdir>/task_delta.safetensors.
    config.mesh = common.mesh_config()
    config.checkpoint = common.checkpoint_config()
    config.log_every_steps = 20
    config.eval_every_steps = 0  # 0: evaluate at the end of every epoch.
    # At each evaluation, log per-layer distances to the step-0 weights (dist/<measure>/<group>).
    config.track_distances = True
    config.transfer_guard = "disallow"  # Implicit host<->device copies in the training loop fail.

    if args.tiny:
        config.model.random_init.enabled = True
        config.data.max_length = 64
        config.data.max_train_examples = 64
        config.data.max_eval_examples = 48
        config.batch_size = 8
        config.eval_batch_size = 16
        config.num_train_steps = 6
        config.log_every_steps = 2
        config.eval_every_steps = 3
        config.checkpoint.every_steps = 3
        config.optim.lr = 1e-3
    return config
