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
        lines += ["", (f"One epoch of {e['task']} training end to end (fft: length buckets, compile "
                      f"included; PyTorch: dynamic padding per batch):"), "",
                  "| | seconds | examples/s |", "|---|---|---|",
                  f"| fft | {e['fft']['seconds']:.1f} | {e['fft']['ex_s']:.1f} |"]
        warm = e.get("fft_warm_cache")
        if warm:
            lines.append(f"| fft, warm compilation cache | {warm['seconds']:.1f} | {warm['ex_s']:.1f} |")
        if "torch" in e:
            lines.append(f"| PyTorch | {e['torch']['seconds']:.1f} | {e['torch']['ex_s']:.1f} |")
            speedup = f"Whole-epoch speed-up: **{e['speedup']:.2f}x**"
            if "speedup_warm_cache" in e:
                speedup += f" (warm cache: **{e['speedup_warm_cache']:.2f}x**)"
            lines += ["", speedup + "."]
    return "\n".join(lines)


def bench_partitions_table(path: pathlib.Path) -> str:
    r = json.loads(path.read_text())
    lines = [f"Seq {r['seq']}, batch {r['batch']}, one run (`python benchmarks/partition_bench.py`):", "",
             "| method | trainable params | step ms | time / full | peak MiB | memory / full |",
             "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['preset']} | {row['trainable_params']:,} | {1e3 * row['step_s']:.0f} | "
                     f"{row['time_ratio']:.2f} | {row['peak_bytes'] / 2**20:.0f} | {row['memory_ratio']:.2f} |")
    return "\n".join(lines)


def table_of(name: str) -> str | None:
    md, js = REPO / "results" / f"{name}.md", REPO / "results" / f"{name}.json"
    if name == "bench_train" and js.exists():
        return bench_train_table(js)
    if name == "bench_partitions" and js.exists():
        return bench_partitions_table(js)
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
