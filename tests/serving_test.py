"""Multi-task serving from packed masks equals running each dense task model on its examples."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from fft import mask_store, models, serving, supermask, tree_paths
from fft.models import bert

CONFIG = bert.BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                         intermediate_size=32, max_position_embeddings=32)


def make_task(params, seed: int, sparsity: float, num_labels: int, pooler: bool = False) -> mask_store.Task:
    config = supermask.MaskConfig(initial_sparsity=sparsity, seed=seed)
    _, backbone = supermask.split_head(params, ("classifier",))
    scores = supermask.init_scores(None, backbone, config)
    flat = tree_paths.flatten(supermask.masks(scores, config))
    masks = {p: np.asarray(m) > 0.5 for p, m in flat.items()}
    rng = np.random.default_rng(seed)
    head = {"classifier/kernel": rng.normal(size=(16, num_labels)).astype(np.float32),
            "classifier/bias": rng.normal(size=(num_labels,)).astype(np.float32)}
    if pooler:  # A task that also trained the pooler (supermask.head_keys='pooler;classifier').
        head["pooler/dense/kernel"] = rng.normal(size=(16, 16)).astype(np.float32)
        head["pooler/dense/bias"] = rng.normal(size=(16,)).astype(np.float32)
    return mask_store.Task(masks, head, config, {})


class ServingTest(absltest.TestCase):
    def test_mixed_batch_matches_dense_models_one_by_one(self):
        model = models.create_model("bert", CONFIG, 2)
        ids = jnp.ones((1, 4), jnp.int32)
        params = jax.device_get(model.init(jax.random.key(0), ids, ids, ids * 0, deterministic=True)["params"])
        tasks = [make_task(params, 1, 0.3, 2), make_task(params, 2, 0.6, 2), make_task(params, 3, 0.1, 1)]
        stack = serving.stack_tasks(tasks, ["a", "b", "c"])
        self.assertEqual(stack.num_labels, (2, 2, 1))
        _, backbone = supermask.split_head(params, ("classifier",))
        server = serving.MultiTaskServer(model, backbone, stack, rows_per_task=4)

        rng = np.random.default_rng(0)
        n, length = 7, 8
        batch = {"input_ids": rng.integers(1, 50, (n, length)).astype(np.int32),
                 "attention_mask": np.ones((n, length), np.int32),
                 "token_type_ids": np.zeros((n, length), np.int32)}
        batch["attention_mask"][:, 6:] = 0
        task_ids = np.array([2, 0, 1, 0, 2, 1, 0])
        got = server.logits(batch, task_ids)

        for i, t in enumerate(task_ids):
            dense = dict(tree_paths.flatten(backbone))
            for p, m in tasks[t].masks.items():
                dense[p] = np.where(m, dense[p], 0.0)
            dense.update(tasks[t].head)
            dense_model = models.create_model("bert", CONFIG, stack.num_labels[t])
            want = dense_model.apply({"params": tree_paths.unflatten(dense)}, batch["input_ids"][i : i + 1],
                                     batch["attention_mask"][i : i + 1], batch["token_type_ids"][i : i + 1],
                                     deterministic=True)[0]
            np.testing.assert_allclose(got[i, : stack.num_labels[t]], want, rtol=1e-5, atol=1e-5)
        self.assertLess(stack.nbytes, sum(x.nbytes for x in jax.tree.leaves(backbone)))

    def test_task_pooler_replaces_the_backbone_pooler(self):
        model = models.create_model("bert", CONFIG, 2)
        ids = jnp.ones((1, 4), jnp.int32)
        params = jax.device_get(model.init(jax.random.key(0), ids, ids, ids * 0, deterministic=True)["params"])
        tasks = [make_task(params, 1, 0.3, 2, pooler=True), make_task(params, 2, 0.2, 2, pooler=True)]
        stack = serving.stack_tasks(tasks, ["a", "b"])
        _, backbone = supermask.split_head(params, ("classifier",))  # Still holds the pretrained pooler.
        server = serving.MultiTaskServer(model, backbone, stack, rows_per_task=2)
        batch = {"input_ids": np.arange(1, 13, dtype=np.int32).reshape(2, 6),
                 "attention_mask": np.ones((2, 6), np.int32), "token_type_ids": np.zeros((2, 6), np.int32)}
        got = server.logits(batch, np.array([0, 1]))
        for i, task in enumerate(tasks):
            dense = dict(tree_paths.flatten(backbone))
            for p, m in task.masks.items():
                dense[p] = np.where(m, dense[p], 0.0)
            dense.update(task.head)
            want = model.apply({"params": tree_paths.unflatten(dense)}, batch["input_ids"][i : i + 1],
                               batch["attention_mask"][i : i + 1], batch["token_type_ids"][i : i + 1],
                               deterministic=True)[0]
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)

    def test_too_many_rows_for_a_task(self):
        batch = {"input_ids": np.zeros((3, 4), np.int32)}
        with self.assertRaisesRegex(ValueError, "task 0 has 3 examples"):
            serving.group_by_task(batch, np.zeros(3, int), 2, 2)


if __name__ == "__main__":
    absltest.main()
