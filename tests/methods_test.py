"""The method registry and interface: read-only, one error line per bad name or option, old
configs still describe the same run, and the training loop never names a method."""

import pathlib
import re

import ml_collections
from absl.testing import absltest, parameterized

from configs import glue as glue_config
from fft import analyze, methods, train
from tests.train_test import tiny_config

REPO = pathlib.Path(__file__).resolve().parent.parent


def old_config(partition=None, supermask=None):
    """A config as written before methods were parts (a `partition` and a `supermask` block)."""
    d = tiny_config().to_dict()
    d.pop("method"), d.pop("full"), d.pop("feature_cache")
    d["partition"] = {"preset": "full", "rules": "", "distances_file": "", "head_lr": 0.0,
                      "feature_cache": False, **(partition or {})}
    mask = {k: v for k, v in methods.default_options("supermask").items()}
    d["supermask"] = {"enabled": False, **mask, **(supermask or {})}
    return ml_collections.ConfigDict(d)


class RegistryTest(parameterized.TestCase):
    def test_registry_is_read_only(self):
        with self.assertRaises(TypeError):
            methods.REGISTRY["mine"] = methods.REGISTRY["full"]  # type: ignore[index]
        with self.assertRaises(TypeError):
            methods.REGISTRY["lora"].options["rank"] = 2  # type: ignore[index]

    @parameterized.parameters(*methods.REGISTRY)
    def test_every_method_builds_from_its_config(self, name):
        config = glue_config.get_config(f"task=rte,tiny,method={name}")
        self.assertEqual(config.method, name)
        self.assertEqual(set(config[name]), set(methods.REGISTRY[name].options))
        others = [k for k in methods.REGISTRY if k != name and k in config]
        self.assertEqual(others, [])

    def test_unknown_method_names_the_valid_ones(self):
        with self.assertRaisesRegex(methods.MethodError, "unknown method 'lorra'; valid methods: full, .*lora"):
            glue_config.get_config("task=rte,method=lorra")

    def test_unknown_option_names_the_valid_ones(self):
        config = tiny_config("lora")
        config.lora.rnk = 4
        with self.assertRaisesRegex(methods.MethodError, r"config.lora: unknown option\(s\) \['rnk'\]; lora takes"):
            methods.check_config(config)

    def test_options_of_another_method_are_refused(self):
        config = tiny_config("lora")
        config.supermask = methods.default_options("supermask")
        with self.assertRaisesRegex(methods.MethodError, r"method is 'lora' but the config has options of \['supermask'\]"):
            methods.check_config(config)
        with self.assertRaisesRegex(methods.MethodError, "an option of method 'supermask', but the run's method is 'lora'"):
            methods.check_overrides(["--config=configs/glue.py:task=rte,method=lora", "--config.supermask.l1=1"])
        methods.check_overrides(["--config=configs/glue.py:task=rte,method=lora", "--config.lora.rank=2"])
        with self.assertRaisesRegex(methods.MethodError, "run's method is 'full'"):
            methods.check_overrides(["--config=configs/glue.py:task=rte", "--config.lora.rank=2"])

    def test_method_switched_by_flag_without_its_block(self):
        config = tiny_config()
        config.method = "lora"
        with self.assertRaisesRegex(methods.MethodError, "has no 'lora' block"):
            methods.check_config(config)


class LegacyConfigTest(parameterized.TestCase):
    @parameterized.parameters(
        ({"preset": "full"}, None, "full", {}),
        ({"preset": "bitfit", "head_lr": 1e-3}, None, "bitfit", {"head_lr": 1e-3}),
        ({"preset": "layers:top2"}, None, "layers", {"select": "top2"}),
        ({"preset": "critical:3", "distances_file": "d.json"}, None, "critical", {"k": 3, "distances_file": "d.json"}),
        ({"rules": "classifier/.*=head;.*=frozen"}, None, "rules", {"rules": "classifier/.*=head;.*=frozen"}),
        (None, {"enabled": True, "score_lr": 1e-2}, "supermask", {"score_lr": 1e-2}),
    )
    def test_old_blocks_become_the_same_method(self, partition, supermask, name, options):
        config = methods.upgrade_config(old_config(partition, supermask))
        self.assertEqual(config.method, name)
        for key, value in options.items():
            self.assertEqual(config[name][key], value)
        self.assertNotIn("partition", config)
        methods.check_config(config)

    def test_old_workdir_loads(self):
        # A run is trained, then its config.json is rewritten in the old layout: analysis of the
        # workdir still rebuilds the same task model.
        workdir = pathlib.Path(self.create_tempdir().full_path)
        train.train_and_evaluate(tiny_config("bitfit"), workdir)
        _, final, _ = analyze.run_params(workdir)
        (workdir / "config.json").write_text(old_config({"preset": "bitfit"}).to_json())
        _, final_old, _ = analyze.run_params(workdir)
        self.assertEqual(sorted(final), sorted(final_old))
        for path in final:
            self.assertTrue((final[path] == final_old[path]).all(), path)
        self.assertEqual(train.load_run_config(workdir).method, "bitfit")
        # An old config also trains (setup upgrades it): it resumes the finished run.
        final_metrics = train.train_and_evaluate(old_config({"preset": "bitfit"}), workdir)
        self.assertEqual(final_metrics["method"], "bitfit")


class ShardedTest(parameterized.TestCase):
    @parameterized.parameters(
        ("lora", {"lora.dropout": 0.1}), ("adapters", {}), ("supermask", {}),
    )
    def test_one_device_and_eight_devices_agree(self, method, options):
        one = train.train_and_evaluate(tiny_config(method, **options, **{"mesh.shape": (1, 1)}),
                                       self.create_tempdir().full_path)
        eight = train.train_and_evaluate(tiny_config(method, **options), self.create_tempdir().full_path)
        self.assertEqual((one["devices"], eight["devices"]), (8, 8))
        self.assertAlmostEqual(one["last_train_loss"], eight["last_train_loss"], delta=1e-5)
        self.assertAlmostEqual(one["eval"]["dev"]["loss"], eight["eval"]["dev"]["loss"], delta=1e-5)


class LoopTest(absltest.TestCase):
    def test_training_loop_names_no_method(self):
        text = (REPO / "fft" / "train.py").read_text() + (REPO / "fft" / "steps.py").read_text()
        # 'full', 'head', 'rules' and 'layers' are also plain words there ("encoder layers").
        names = [n for n in methods.REGISTRY if n not in ("full", "head", "rules", "layers")]
        found = [n for n in names if re.search(rf"\b{n}\b", text)]
        self.assertEqual(found, [])
        self.assertNotIn("config.partition", text)


if __name__ == "__main__":
    absltest.main()
