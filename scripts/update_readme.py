"""Copies the headline result tables from results/*.md into README.md between markers.

  python scripts/update_readme.py

A marker pair `<!-- name -->` ... `<!-- /name -->` (or a lone `<!-- name -->`) in the README is
replaced by the table part of `results/<name>.md` (its lines up to the 'Commands:' list), so the
numbers in the README are always the ones the experiment scripts wrote.
"""

from __future__ import annotations

import json
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parent.parent


def bench_train_table(path: pathlib.Path) -> str:
    r = json.loads(path.read_text())
    lines = [("| seq | batch | fft train ex/s | torch train ex/s | train ratio | fft eval ex/s | "
             "torch eval ex/s | eval ratio |"), "|---|---|---|---|---|---|---|---|"]
    for s in r.get("step", []):
        lines.append(
            f"| {s['seq']} | {s['batch']} | {s['fft_train_ex_s']:.1f} | {s.get('torch_train_ex_s', 0):.1f} | "
            f"{s.get('train_ratio', 0):.2f}x | {s['fft_eval_ex_s']:.1f} | {s.get('torch_eval_ex_s', 0):.1f} | "
            f"{s.get('eval_ratio', 0):.2f}x |"
        )
    if "epoch" in r:
        e = r["epoch"]
        lines += ["", (f"One epoch of {e['task']} training end to end, compilation included (fft: an "
                      "empty compilation cache unless marked warm; PyTorch: dynamic padding per batch):"), "",
                  "| | train seconds | examples/s | token positions | batch shapes | speed-up vs PyTorch |",
                  "|---|---|---|---|---|---|"]
        rows = (("fft, packed rows (default)", "fft", "speedup"),
                ("fft, packed rows, warm compilation cache", "fft_warm_cache", "speedup_warm_cache"),
                ("fft, length buckets", "fft_buckets", "speedup_buckets"),
                ("PyTorch", "torch", None))
        shapes_of = {"fft_warm_cache": "fft"}  # The warm rerun has the cold run's batches.
        for label, key, speedup in rows:
            if key not in e:
                continue
            run, shaped = e[key], e.get(shapes_of.get(key, key), {})
            ratio = f"**{e[speedup]:.2f}x**" if speedup and speedup in e else "-"
            lines.append(f"| {label} | {run['seconds']:.1f} | {run['ex_s']:.1f} | {_tokens(shaped)} | "
                         f"{shaped.get('batch_shapes', '-')} | {ratio} |")
        notes = []
        if "example_tokens" in e["fft"]:
            notes.append(f"The examples themselves have {e['fft']['example_tokens']:,} tokens.")
        if "pack" in e["fft"]:
            p = e["fft"]["pack"]
            notes.append(f"Packed rows: {p['length']} tokens, up to {p['slots']} examples a row, "
                         f"{' or '.join(map(str, p['rows']))} rows a step.")
        if "buckets" in e.get("fft_buckets", {}):
            notes.append(f"Length buckets: {e['fft_buckets']['buckets']}.")
        if "runs_seconds" in e.get("torch", {}):
            runs = ", ".join(f"{x:.1f}" for x in e["torch"]["runs_seconds"])
            notes.append(f"PyTorch ran first and last ({runs} s); its row is their mean.")
        if notes:
            lines += ["", " ".join(notes)]
    lines += ["", _against_target(r)]
    return "\n".join(lines)


def _against_target(r: dict) -> str:
    """One line on the speed target (a whole cold epoch >= 1.5x PyTorch, every step >= 1.0x)."""
    ratios = [s[k] for s in r.get("step", []) for k in ("train_ratio", "eval_ratio") if k in s]
    parts = []
    if ratios:
        parts.append(f"per step the slowest ratio is {min(ratios):.2f}x "
                     f"({'met' if min(ratios) >= 1.0 else 'not met'}: no slower than PyTorch)")
    if "speedup" in r.get("epoch", {}):
        e = r["epoch"]["speedup"]
        parts.append(f"the cold epoch is {e:.2f}x ({'met' if e >= 1.5 else 'not met'}: at least 1.5x)")
    return "Against the target, in this run: " + "; ".join(parts) + "." if parts else ""


def _tokens(run: dict) -> str:
    return f"{run['padded_tokens']:,}" if "padded_tokens" in run else "-"


def bench_dropout_table(path: pathlib.Path) -> str:
    r = json.loads(path.read_text())
    lines = [("| MiniLM train step, batch 32 | hashed masks ms | bernoulli (threefry) ms | "
             "bernoulli (rbg) ms | speed-up vs threefry | vs rbg |"), "|---|---|---|---|---|---|"]
    for row in r["train_step"]:
        lines.append(f"| seq {row['seq']} | {row['hashed_step_ms']:.0f} | {row['bernoulli_threefry_step_ms']:.0f} | "
                     f"{row['bernoulli_rbg_step_ms']:.0f} | {row['step_speedup_vs_bernoulli_threefry']:.2f}x | "
                     f"{row['step_speedup_vs_bernoulli_rbg']:.2f}x |")
    for row in r["masks"]:
        lines.append(f"| one dropout layer {row['shape']} | {row['hashed_ms']:.2f} | "
                     f"{row['bernoulli_threefry_ms']:.2f} | {row['bernoulli_rbg_ms']:.2f} | "
                     f"{row['speedup_vs_bernoulli_threefry']:.1f}x | {row['speedup_vs_bernoulli_rbg']:.1f}x |")
    return "\n".join(lines)


def bench_serving_table(path: pathlib.Path) -> str:
    r = json.loads(path.read_text())
    a, b = r["shared"], r["dense_one_by_one"]
    return "\n".join([
        (f"{r['tasks']} tasks x {r['rows_per_task']} rows, seq {r['seq']}, one mixed batch "
         "(`python benchmarks/serving_bench.py`):"), "",
        "| | resident bytes | program temp bytes | seconds | examples/s |", "|---|---|---|---|---|",
        (f"| one backbone + packed masks | {a['resident_bytes']:,} | {a['program_bytes']:,} | "
         f"{a['seconds']:.3f} | {a['ex_s']:.1f} |"),
        (f"| dense task models one by one | {b['resident_bytes']:,} | {b['program_bytes']:,} | "
         f"{b['seconds']:.3f} | {b['ex_s']:.1f} |"),
        "", (f"Resident memory {r['memory_ratio_resident']:.2f}x, resident + program temp "
             f"{(a['resident_bytes'] + a['program_bytes']) / (b['resident_bytes'] + b['program_bytes']):.2f}x, "
             f"throughput {r['throughput_ratio']:.2f}x of the dense models; largest logit difference "
             f"{r['max_abs_logit_diff']:.1e}."),
    ])


def bench_methods_table(path: pathlib.Path) -> str:
    r = json.loads(path.read_text())
    lines = [(f"Seq {r['seq']}, batch {r['batch']}, every method side by side in one run, interleaved "
             "(`python benchmarks/methods_bench.py`):"), "",
             ("| variant | method | trainable params | step ms | time / full | peak MiB | memory / full "
             "| state + weights MiB | temporaries MiB |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['variant']} | {row['method']} | {row['trainable_params']:,} | "
                     f"{1e3 * row['step_s']:.0f} | {row['time_ratio']:.2f} | "
                     f"{row['peak_bytes'] / 2**20:.0f} | {row['memory_ratio']:.2f} | "
                     f"{row.get('argument_bytes', 0) / 2**20:.0f} | {row.get('temp_bytes', 0) / 2**20:.0f} |")
    return "\n".join(lines)


def bench_multitask_table(path: pathlib.Path) -> str:
    r = json.loads(path.read_text())
    peft = r.get("peft")
    lines = [(f"{r['tasks']} tasks on one MiniLM backbone, one batch of {r['batch']} examples at seq "
              f"{r['seq']}; examples/s (`python benchmarks/multitask_bench.py`). server: the whole "
              "batch in one call; chunked: the same call in chunks of "
              f"{next(iter(r['methods'].values()))['memory']['chunked_rows']} rows; dense: each task's "
              "merged model on its own examples, one task after another; PEFT: `adapter_names=` "
              "mixed-batch inference in PyTorch (LoRA only)."), "",
             ("| method | tasks in batch | server | chunked | dense one by one | PEFT mixed | chunked / dense "
             "| chunked / PEFT |"), "|---|---|---|---|---|---|---|---|"]
    for name, row in r["methods"].items():
        for m in row["mixes"].values():
            p = m.get("peft_mixed_ex_s") if peft and name == "lora" else None
            peft_ex = "-" if p is None else f"{p:.1f}"
            over_peft = "-" if p is None else f"{m['chunked_ex_s'] / p:.2f}x"
            lines.append(f"| {name} | {m['tasks_in_batch']} | {m['server_ex_s']:.1f} | "
                         f"{m['chunked_ex_s']:.1f} | {m['dense_ex_s']:.1f} | {peft_ex} | "
                         f"{m['chunked_over_dense']:.2f}x | {over_peft} |")
    lines += ["", ("| method | resident: server (task leaves) | resident: dense copies | resident ratio | "
              "with program peak: chunked server | dense | ratio | max logit diff |"), "|---|---|---|---|---|---|---|---|"]
    for name, row in r["methods"].items():
        m = row["memory"]
        lines.append(f"| {name} | {m['server_resident_bytes'] / 2**20:.1f} MiB ({m['server_task_bank_bytes'] / 2**20:.1f}) | "
                     f"{m['dense_resident_bytes'] / 2**20:.1f} MiB | {m['resident_ratio']:.3f} | "
                     f"{m['chunked_peak_bytes'] / 2**20:.1f} MiB | {m['dense_total_bytes'] / 2**20:.1f} MiB | "
                     f"{m['chunked_total_ratio']:.3f} | {row['max_abs_logit_diff']:.1e} |")
    if peft:
        lines += ["", (f"PEFT's best case, one merged adapter on all {r['batch']} examples: "
                      f"{peft['ex_s']['merged_one']:.1f} ex/s (torch {peft['torch']}, peft {peft['peft']}).")]
    return "\n".join(lines)


def bench_malloc_table(path: pathlib.Path) -> str:
    r = json.loads(path.read_text())
    lines = ["| seq | GLIBC_TUNABLES | page faults / step | user s / step | system s / step | ex/s | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for row in r["train_step"]:
        for side in [k.removesuffix("_tunables") for k in row if k.endswith("_tunables")]:
            tunables = row[f"{side}_tunables"].replace("glibc.malloc.", "") or "(glibc defaults)"
            lines.append(f"| {row['seq']} | `{tunables}` | {row[f'{side}_minor_faults_per_step']:,.0f} | "
                         f"{row[f'{side}_user_s_per_step']:.2f} | {row[f'{side}_sys_s_per_step']:.3f} | "
                         f"{row[f'{side}_ex_s']:.1f} | {row[f'{side}_speedup']:.2f}x |")
    return "\n".join(lines)


RENDERERS = {
    "bench_train": bench_train_table,
    "bench_serving": bench_serving_table,
    "bench_dropout": bench_dropout_table,
    "bench_methods": bench_methods_table,
    "bench_multitask": bench_multitask_table,
    "bench_malloc": bench_malloc_table,
}


def table_of(name: str) -> str | None:
    md, js = REPO / "results" / f"{name}.md", REPO / "results" / f"{name}.json"
    if name in RENDERERS and js.exists():
        return RENDERERS[name](js)
    if not md.exists():
        return None
    text = md.read_text().split("\nCommands:")[0].rstrip()
    return text


def main() -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    for name in re.findall(r"<!-- ([a-z_]+) -->", text):
        table = table_of(name)
        if table is None:
            print(f"no results for {name}; left as is")
            continue
        block = f"<!-- {name} -->\n{table}\n<!-- /{name} -->"
        pattern = re.compile(rf"<!-- {name} -->(?:.*?<!-- /{name} -->)?", re.DOTALL)
        text = pattern.sub(lambda _, b=block: b, text, count=1)
        print(f"updated {name}")
    readme.write_text(text)


if __name__ == "__main__":
    main()
