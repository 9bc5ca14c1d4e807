"""Evaluation (METHOD.md §6): prompts -> videos -> metrics -> report.

`config` (EvalConfig, the methods compared), `generate` (the video jobs, generated resumably),
`score` (the metrics of each method's videos, with the models of `perception/`), `report`
(results.json, report.md, the report across relations). The stage that runs them for one
relation is `stages/evaluate.py`. Layering: docs/architecture.md.
"""
