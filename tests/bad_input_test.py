"""Bad input to `fft train`: each case exits with status 2 after one line `fft: error: ...` (plus
at most a hint line), prints no traceback, and leaves the workdir as it was.

The cases run in this process through `fft.cli.run` (the console script's body); two of them also
run the installed `fft` script in a subprocess. `python tests/bad_input_test.py --table` prints the
table (input -> first line of the message -> exit status) for the record.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from fft import cli

REPO = pathlib.Path(__file__).resolve().parent.parent
GLUE = REPO / "data" / "glue"
TINY = "--config=configs/glue.py:task=rte,tiny"
LORA = "--config=configs/glue.py:task=rte,tiny,method=lora"
LEARNERS = "--config=configs/glue.py:task=rte,tiny,method=learners"
RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
RTE_ROW = "0\tA cat sat.\tA cat is sitting.\tentailment\n"
SHORT_ROW = RTE_HEADER + RTE_ROW + "1\tonly two\n"
BAD_LABEL = RTE_HEADER + RTE_ROW.replace("entailment", "maybe")
NOT_UTF8 = RTE_HEADER.encode() + b"0\t\xff\xfe\tx\tentailment\n"
ONE_ROW = RTE_HEADER + RTE_ROW


def glue_dir(root: pathlib.Path, train: str | bytes | None, dev: bool = True) -> pathlib.Path:
    """A GLUE folder whose RTE train.tsv is `train` (None: missing) and dev.tsv the shipped one."""
    folder = root / "glue" / "RTE"
    folder.mkdir(parents=True)
    if train is not None:
        path = folder / "train.tsv"
        path.write_bytes(train if isinstance(train, bytes) else train.encode())
    if dev:
        shutil.copy(GLUE / "RTE" / "dev.tsv", folder / "dev.tsv")
    return root / "glue"


def wrong_shape_model(root: pathlib.Path) -> pathlib.Path:
    """tests/fixtures/tiny_bert_cls with a config.json that says the layers are twice as wide."""
    folder = root / "model"
    shutil.copytree(REPO / "tests" / "fixtures" / "tiny_bert_cls", folder)
    text = (folder / "config.json").read_text()
    import json

    config = json.loads(text)
    config["intermediate_size"] = 2 * config["intermediate_size"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# (id, argv after `fft train` (WORKDIR, ROOT and RUN are filled in), prepare(root) -> extra argv,
#  expected text in the first line). RUN is a copy of a finished tiny run.
CASES = [
    ("no-workdir", [TINY], None, "--workdir is required"),
    ("unknown-flag", [TINY, "WORKDIR", "--lr=3e-5"], None, "Unknown command line flag 'lr'"),
    ("config-file-missing", ["--config=configs/nope.py", "WORKDIR"], None, "no such file"),
    ("config-arg-unknown", ["--config=configs/glue.py:task=rte,tiny,bogus=3", "WORKDIR"], None,
     "Unknown config argument 'bogus'"),
    ("task-unknown", ["--config=configs/glue.py:task=rtee,tiny", "WORKDIR"], None, "Unknown GLUE task 'rtee'"),
    ("method-unknown", ["--config=configs/glue.py:task=rte,tiny,method=lorra", "WORKDIR"], None,
     "unknown method 'lorra'"),
    ("field-misspelled", [TINY, "WORKDIR", "--config.optim.lrr=1e-4"], None,
     "--config.optim.lrr: the config has no field optim.lrr (did you mean optim.lr?)"),
    ("block-misspelled", [TINY, "WORKDIR", "--config.optimm.lr=1e-4"], None, "did you mean optim.lr?"),
    ("method-option-misspelled", [LORA, "WORKDIR", "--config.lora.rnk=4"], None, "did you mean lora.rank?"),
    ("other-method-option", [LORA, "WORKDIR", "--config.supermask.score_lr=1"], None,
     "an option of method 'supermask'"),
    ("value-not-a-number", [TINY, "WORKDIR", "--config.optim.lr=abc"], None, "--config.optim.lr=abc"),
    ("int-field-float", [TINY, "WORKDIR", "--config.batch_size=2.5"], None, "--config.batch_size=2.5"),
    ("log-every-0", [TINY, "WORKDIR", "--config.log_every_steps=0"], None, "config.log_every_steps=0: must be"),
    ("checkpoint-every-0", [TINY, "WORKDIR", "--config.checkpoint.every_steps=0"], None,
     "config.checkpoint.every_steps=0: must be"),
    ("batch-size-0", [TINY, "WORKDIR", "--config.batch_size=0"], None, "config.batch_size=0"),
    ("eval-batch-negative", [TINY, "WORKDIR", "--config.eval_batch_size=-16"], None, "config.eval_batch_size=-16"),
    ("batch-not-split", [TINY, "WORKDIR", "--config.batch_size=12"], None,
     "config.batch_size=12: does not split over the mesh's 8 data shards"),
    ("fraction-above-1", [TINY, "WORKDIR", "--config.data.train_fraction=1.5"], None,
     "config.data.train_fraction=1.5: must be in (0, 1]"),
    ("fraction-0", [TINY, "WORKDIR", "--config.data.train_fraction=0"], None, "config.data.train_fraction=0"),
    ("lr-nan", [TINY, "WORKDIR", "--config.optim.lr=nan"], None, "config.optim.lr=nan"),
    ("lr-negative", [TINY, "WORKDIR", "--config.optim.lr=-0.001"], None, "config.optim.lr=-0.001"),
    ("nothing-to-train", [TINY, "WORKDIR", "--config.num_train_steps=0", "--config.num_epochs=0"], None,
     "nothing to train"),
    ("dtype-unknown", [TINY, "WORKDIR", "--config.model.dtype=float64"], None, "config.model.dtype='float64'"),
    ("max-length-0", [TINY, "WORKDIR", "--config.data.max_length=0"], None, "config.data.max_length=0"),
    ("dropout-rng-unknown", [TINY, "WORKDIR", "--config.dropout_rng=mt19937"], None, "config.dropout_rng='mt19937'"),
    ("lora-rank-0", [LORA, "WORKDIR", "--config.lora.rank=0"], None, "config.lora.rank=0"),
    ("data-source-unknown", [TINY, "WORKDIR", "--config.data.source=csv"], None, "config.data.source='csv'"),
    ("data-dir-missing", [TINY, "WORKDIR", "--config.data.dir=ROOT/no_glue"], None, "no such file"),
    ("train-header-only", [TINY, "WORKDIR"], lambda r: [f"--config.data.dir={glue_dir(r, RTE_HEADER)}"],
     "train.tsv: no examples, only a header"),
    ("train-empty", [TINY, "WORKDIR"], lambda r: [f"--config.data.dir={glue_dir(r, '')}"],
     "train.tsv:1: empty file"),
    ("train-row-columns", [TINY, "WORKDIR"],
     lambda r: [f"--config.data.dir={glue_dir(r, SHORT_ROW)}"], "train.tsv:3:"),
    ("train-row-label", [TINY, "WORKDIR"],
     lambda r: [f"--config.data.dir={glue_dir(r, BAD_LABEL)}"],
     "train.tsv:2:"),
    ("train-not-utf8", [TINY, "WORKDIR"],
     lambda r: [f"--config.data.dir={glue_dir(r, NOT_UTF8)}"],
     "not UTF-8"),
    ("dev-missing", [TINY, "WORKDIR"], lambda r: [f"--config.data.dir={glue_dir(r, ONE_ROW, dev=False)}"],
     "dev.tsv: no such file"),
    ("model-missing", [TINY, "WORKDIR", "--config.model.random_init.enabled=False",
                       "--config.model.name=ROOT/no_model"], None, "no_model"),
    ("model-wrong-shape", [TINY, "WORKDIR", "--config.model.random_init.enabled=False"],
     lambda r: [f"--config.model.name={wrong_shape_model(r)}"], "intermediate"),
    ("workdir-is-file", [TINY, "--workdir=ROOT/afile"], lambda r: (r / "afile").write_text("x") and [],
     "is a file, not a folder"),
    ("workdir-under-file", [TINY, "--workdir=ROOT/afile/run"], lambda r: (r / "afile").write_text("x") and [],
     "cannot create it"),
    ("resume-other-model-size", [TINY, "RUN", "--config.model.random_init.hidden_size=64",
                                 "--config.model.random_init.intermediate_size=128"], None,
     ("holds another state than this run's: params/classifier/kernel is float32[32,2] in the checkpoint "
      "but float32[64,2] in this run")),
    ("resume-other-method", [LORA, "RUN"], None,
     "holds another state than this run's: params/lora/encoder/layer_0/attention/query/a is in this run"),
    ("loss-nan", [TINY, "WORKDIR", "--config.optim.lr=1e30"], None, "training loss is nan"),
    ("time-budget-zero", [TINY, "WORKDIR", "--config.num_train_steps=0", "--config.time_budget_s=0"], None,
     "config.time_budget_s=0.0: must be a number of seconds > 0"),
    ("time-budget-negative", [TINY, "WORKDIR", "--config.num_train_steps=0", "--config.time_budget_s=-5"],
     None, "config.time_budget_s=-5.0: must be a number of seconds > 0"),
    ("time-budget-with-steps", [TINY, "WORKDIR", "--config.time_budget_s=60"], None,
     "config.time_budget_s=60.0 and config.num_train_steps=6: a budget decides the step count itself"),
    ("time-budget-too-short", [TINY, "WORKDIR", "--config.num_train_steps=0", "--config.time_budget_s=1e-6"],
     None, "config.time_budget_s=1e-06: too short to finish one step"),
    ("learners-fraction", [LEARNERS, "WORKDIR", "--config.learners.fraction=1.5"], None,
     "config.learners.fraction=1.5: must be in (0, 1]"),
    ("learners-priming-whole-run", [LEARNERS, "WORKDIR", "--config.learners.priming=1.0"], None,
     "config.learners.priming=1.0: must be in [0, 1)"),
    ("learners-priming-no-step-left", [LEARNERS, "WORKDIR", "--config.learners.priming=0.95"], None,
     "config.learners.priming=0.95 of num_train_steps=6 leaves no step for the method's own run"),
    ("eval-every-s-zero", [TINY, "WORKDIR", "--config.eval_every_s=0"], None,
     "config.eval_every_s=0.0: must be a number of seconds > 0"),
]


def snapshot(root: pathlib.Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def run_fft(argv: list[str]) -> tuple[int, str, str]:
    """`fft train ARGV` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.run(["train", *argv, "--compilation_cache_dir="])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> pathlib.Path:
    """A finished tiny run (full fine-tuning), the starting point of the resume cases."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    code, out, err = run_fft([TINY, f"--workdir={workdir}"])
    assert code == 0, out + err
    return workdir


def fill(argv: list[str], root: pathlib.Path, run: pathlib.Path | None) -> list[str]:
    out = []
    for arg in argv:
        if arg == "WORKDIR":
            arg = f"--workdir={root / 'work'}"
        elif arg == "RUN":
            arg = f"--workdir={run}"
        out.append(arg.replace("ROOT", str(root)))
    return out


@pytest.mark.parametrize("name,argv,prepare,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, argv, prepare, expected, tmp_path, finished_run, monkeypatch):
    monkeypatch.chdir(REPO)
    run = None
    if "RUN" in argv:
        run = tmp_path / "run"
        shutil.copytree(finished_run, run)
    args = fill(argv, tmp_path, run)
    if prepare is not None:
        args += prepare(tmp_path) or []
    workdir = pathlib.Path(next((a.split("=", 1)[1] for a in args if a.startswith("--workdir=")), tmp_path / "none"))
    before = snapshot(workdir)
    code, out, err = run_fft(args)
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert lines and lines[0].startswith("fft: error: "), err
    assert expected in lines[0], lines[0]
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("  hint: ")), err
    assert "Traceback" not in out + err
    if name == "loss-nan":  # A fresh run that diverged: nothing was checkpointed after the NaN.
        assert not (workdir / "final_metrics.json").exists()
    else:
        after = snapshot(workdir)
        assert after == before or (not before and not any(after)), sorted(set(after) ^ set(before))


@pytest.mark.parametrize("argv,expected", [
    (["train", TINY, "--workdir=WORK", "--config.optim.lrr=1"], "did you mean optim.lr?"),
    (["train", "--config=configs/glue.py:task=rte,tiny,method=lorra", "--workdir=WORK"], "unknown method"),
])
def test_console_script(argv, expected, tmp_path):
    """The installed `fft` script: exit status 2, one line on stderr, nothing on stdout."""
    script = pathlib.Path(sys.executable).parent / "fft"
    if not script.exists():  # Not installed with pip install -e: the module is the same code.
        cmd = [sys.executable, "-c", "import sys; from fft import cli; sys.exit(cli.run(sys.argv[1:]))"]
    else:
        cmd = [str(script)]
    env = dict(os.environ, FFT_MALLOC_TUNING="0", HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    argv = [a.replace("WORK", str(tmp_path / "w")) for a in argv]
    proc = subprocess.run(cmd + argv, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("fft: error: "), proc.stderr
    assert expected in proc.stderr
    assert proc.stdout == ""


def test_finished_run_is_left_alone(finished_run, tmp_path, monkeypatch):
    """Starting a finished run again prints where its results are and rewrites nothing."""
    monkeypatch.chdir(REPO)
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    code, out, err = run_fft([TINY, f"--workdir={run}"])
    assert code == 0, err
    assert "finished at step 6" in out
    assert snapshot(run) == before


def print_table() -> None:
    """input -> first line of the message -> exit status, as markdown (for the record)."""
    import tempfile

    print("| case | input | first line | exit |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        finished = pathlib.Path(tmp) / "finished"
        assert run_fft([TINY, f"--workdir={finished}"])[0] == 0
        for i, (name, argv, prepare, _) in enumerate(CASES):
            root = pathlib.Path(tmp) / str(i)
            root.mkdir()
            run = None
            if "RUN" in argv:
                run = root / "run"
                shutil.copytree(finished, run)
            args = fill(argv, root, run) + ((prepare(root) or []) if prepare else [])
            code, _, err = run_fft(args)
            shown = " ".join(a.replace(str(root), "T") for a in args)
            first = err.strip().splitlines()[0].replace(str(root), "T") if err.strip() else ""
            print(f"| {name} | `fft train {shown}` | `{first}` | {code} |")


if __name__ == "__main__":
    if "--table" in sys.argv:
        os.chdir(REPO)
        print_table()
