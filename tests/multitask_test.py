"""Several tasks in one batch on one frozen backbone: every example's logits equal those of its own
task's dense model, for LoRA (tasks of different ranks and label counts), adapters and BitFit."""

import jax
import numpy as np
from absl.testing import absltest, parameterized

from configs import glue as glue_config
from fft import methods, models, multitask, tree_paths
from tests.lora_test import CFG, batch, logits


def randomize(trainable, seed):
    """Every trained leaf random (training would move them), so the tasks really differ."""
    rng = np.random.default_rng(seed)
    flat = tree_paths.flatten(trainable)
    return tree_paths.unflatten({p: rng.normal(0, 0.3, np.shape(v)).astype(np.float32) + np.asarray(v)
                                 for p, v in flat.items()})


def make(method_name, num_labels, seed, **options):
    model = models.create_model("bert", CFG, num_labels)
    ids = np.ones((1, 8), np.int32)
    params = jax.device_get(model.init(jax.random.key(0), ids, ids, ids, deterministic=True)["params"])
    config = glue_config.get_config(f"task=rte,tiny,method={method_name}")
    config[method_name].update(options)
    method = methods.create(config, model)
    trainable, frozen = method.init(params, jax.random.key(seed))
    return model, method, randomize(trainable, seed), frozen


class MultiTaskTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("lora", "lora", [{"rank": 4}, {"rank": 2, "alpha": 16.0}, {"rank": 4, "targets": "query_value"}]),
        ("lora_all_linear_pooler", "lora", [{"rank": 2, "targets": "all_linear", "train": "pooler/.*"}] * 2),
        ("houlsby", "adapters", [{"size": 4}, {"size": 4}]),
        ("pfeiffer_no_layer_norms", "adapters", [{"size": 4, "placement": "pfeiffer", "train_layer_norms": False}] * 3),
        ("bitfit", "bitfit", [{}, {}]),
    )
    def test_each_example_gets_its_own_task(self, method_name, options):
        labels = [3, 2, 3][: len(options)]
        tasks = [make(method_name, n, seed, **o) for seed, (n, o) in enumerate(zip(labels, options))]
        widest = max(labels)
        frozen = tasks[0][3]
        server = multitask.MultiTaskServer(frozen, [(t[1], t[2]) for t in tasks], [f"t{i}" for i in range(len(tasks))],
                                           rows_per_call=0)
        self.assertEqual(server.bank.num_labels, tuple(labels))
        b = batch(rows=6)
        task_ids = np.array([0, len(tasks) - 1, 1, 0, len(tasks) - 1, 1]) % len(tasks)
        out = server.logits(b, task_ids)
        self.assertEqual(out.shape, (6, widest))
        chunked = multitask.MultiTaskServer(frozen, [(t[1], t[2]) for t in tasks], server.bank.names, rows_per_call=4)
        np.testing.assert_allclose(chunked.logits(b, task_ids), out, atol=2e-5)
        for i, t in enumerate(task_ids):
            _, m, trainable, fr = tasks[t]
            dense = logits(m.model, m.merged(trainable, fr), b)[i]
            np.testing.assert_allclose(out[i, : labels[t]], dense, atol=2e-5, err_msg=f"example {i}, task {t}")
            np.testing.assert_array_equal(out[i, labels[t]:], 0.0)

    def test_mismatched_tasks_are_refused(self):
        a = make("lora", 2, 0, rank=2)
        b = make("lora", 2, 1, rank=2, targets="all_linear")
        with self.assertRaisesRegex(ValueError, "trains other leaves"):
            multitask.MultiTaskServer(a[3], [(a[1], a[2]), (b[1], b[2])], ["a", "b"])
        server = multitask.MultiTaskServer(a[3], [(a[1], a[2])], ["a"])
        with self.assertRaisesRegex(ValueError, "task id 1 out of range"):
            server.logits(batch(rows=2), np.array([0, 1]))
        s = make("supermask", 2, 0)
        with self.assertRaisesRegex(ValueError, "no per-example serving"):
            multitask.MultiTaskServer(s[3], [(s[1], s[2])], ["s"])


if __name__ == "__main__":
    absltest.main()
