"""The claims report (scripts/claims.py): each claim of the papers behind fft as a criterion
tested on the grid tables, its evidence and a verdict, as results/claims.{md,json}.

  tables     the grids' results tables (fft.sweep.tables): rows, per-seed scores, planned cells
  verdicts   paired comparisons, the overall rules, and the claims computed from the tables
  distances  how far the full fine-tuning runs moved (claims 1 and 2) and its cache
  rankings   the layers each layer ranking picks and their scores side by side (claims 3a-3c)
  learners   learners against full fine-tuning, their parameter counts and speed (claims 8a-8c),
             and the priming / node-choice ablation
  budgets    BitFit at every time budget (9a) and the adapters' spread across grids (9b)
  build      every claim in order and the protocol's facts, as one JSON-ready document
  markdown   the document as Markdown (markdown_methods: the tables of claims 8a-9b; text: numbers)
  figures_data  the numbers behind scripts/figures.py (time to target, used by claim 8c)

Nothing here imports JAX or loads a model unless a run's distances must be computed.
"""
