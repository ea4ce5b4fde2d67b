"""Fine-tune a BERT-family encoder on one GLUE task with any registered method (default: full).

Command lines:
  # Packaged all-MiniLM-L6-v2 on RTE, 3 epochs (about 10 minutes on 2 CPU cores):
  fft train --config=configs/glue.py:task=rte --workdir=runs/rte
  # Another task, another learning rate:
  fft train --config=configs/glue.py:task=cola --config.optim.lr=3e-5 --workdir=runs/cola
  # A local Hugging Face-format folder (config.json + model.safetensors + tokenizer files):
  fft train --config=configs/glue.py:task=stsb,model=/path/to/bert --workdir=runs/stsb
  # Smoke test: a 2-layer random-init model, a few steps, a slice of the data:
  fft train --config=configs/glue.py:task=rte,tiny --workdir=/tmp/fft_tiny
  # Another fine-tuning method (fft/methods), with its options in its own block:
  fft train --config=configs/glue.py:task=rte,method=lora --config.lora.rank=4 \
      --config.optim.lr=5e-4 --workdir=runs/rte_lora
"""

from __future__ import annotations

import ml_collections

from configs import common
from fft import methods

TINY_MODEL = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(
        arg, task="rte", model="minilm", tiny=False, dtype="float32", method="full"
    )
    methods.entry(args.method)  # An unknown method fails here, naming the valid ones.
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
        # > 0: a stratified split of this fraction of train (fixed, whatever the seed) becomes the
        # only eval split, `validation`; the rest trains (fft.data.splits). 0: evaluate on dev.
        "validation_fraction": 0.0,
        "max_train_examples": 0,  # 0 keeps all (applied after train_fraction).
        "max_eval_examples": 0,
        "skip_malformed": False,
        "skip_steps": 0,  # Training batches an earlier phase took (fft.priming); the stream starts after them.
    }
    config.model = {
        "name": args.model,  # 'minilm' (packaged), a local HF folder, or a hub name if online.
        "dtype": args.dtype,  # Compute dtype; parameters stay float32.
        # What the head classifies: 'cls' (first token; BERT through its pooler), 'mean' (the
        # mean of the real tokens; BERT: no pooler) or 'auto': the pooling the model folder was
        # trained with (sentence-transformers' modules.json: 'mean' for minilm), else 'cls'.
        # Measured: results/grids/pooling.md; README "Pooling".
        "pooling": "auto",
        "random_init": ml_collections.ConfigDict(
            dict(enabled=False, tokenizer="minilm", **TINY_MODEL)
        ),
    }
    config.batch_size = 32
    config.eval_batch_size = 128
    config.num_epochs = 3.0
    config.num_train_steps = 0  # > 0 overrides num_epochs.
    config.optim = common.optim_config(lr=5e-5)
    # The fine-tuning method (fft/methods): its name, and its options in a block of the same name.
    config.method = args.method
    config[args.method] = methods.default_options(args.method)
    # Run the frozen bottom layers once per dataset (no dropout there); legal when the method
    # leaves the embeddings and the bottom encoder layer unchanged (e.g. head, layers:top2).
    config.feature_cache = False
    # A run's workdir whose final parameters start this run's trainable leaves (fft.priming sets it
    # for a method's second phase); '' = the pretrained weights.
    config.init_trainable_from = ""
    config.export_delta = True  # Write the trained leaves to <workdir>/task_delta.safetensors.
    config.mesh = common.mesh_config()
    config.checkpoint = common.checkpoint_config()
    config.log_every_steps = 20
    config.eval_every_steps = 0  # 0: evaluate at the end of every epoch.
    # Wall-clock limits (fft.budget), unset by default: seconds of training (evaluation and
    # checkpoints excluded); the step count is planned from the measured step time (or
    # time_budget_step_s) and num_epochs is ignored. eval_every_s adds evaluations every so many
    # training seconds (the points of <workdir>/curve.json).
    config.time_budget_s = ml_collections.config_dict.placeholder(float)
    config.time_budget_step_s = ml_collections.config_dict.placeholder(float)
    config.eval_every_s = ml_collections.config_dict.placeholder(float)
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
        if args.method == "adapters":  # The tiny model is 32 wide: a narrower bottleneck.
            config.adapters.size = 8
    return config
