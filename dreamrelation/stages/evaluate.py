"""The `evaluate` stage body for one relation (METHOD.md §6): prompts -> videos -> metrics -> report.

Reads the relation's inference LoRA (the train_relation artifact) and the configured metric
models, writes into `out_dir`:
1. `videos/<method>/p<prompt>-seed<seed>.mp4` for every method x prompt x seed
   (`evaluation.generate`, resumable);
2. the scores of every method (`evaluation.score`), after the pipeline is freed; relation
   accuracy by the VLM or, with `relation_judge: toy`, by the toy-world judge (issue 13 §3);
3. `results.json`, `fvd/<method>.npy` and `report.md` (`evaluation.report`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dreamrelation.evaluation.config import EvalConfig
from dreamrelation.evaluation.generate import Progress, eval_prompts, generate_videos, plan_videos, resolve_lora
from dreamrelation.evaluation.report import RESULTS_VERSION, headline, write_relation_results
from dreamrelation.evaluation.score import (
    FVD_DIR,
    check_metric_inputs,
    ensure_tiny_eval_models,
    load_metric_models,
    reference_features,
    score_method,
)
from dreamrelation.model.config import BaseModelConfig

log = logging.getLogger("dreamrelation.evaluate")


def evaluate_relation(
    relation: str,
    config: EvalConfig,
    base: BaseModelConfig,
    relation_lora: str | Path | None,
    out_dir: str | Path,
    relation_name: str | None = None,
    progress: Progress | None = None,
    trained_loras: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Generate (resumably) and score every method for `relation`; write results.json and report.md.

    `relation_lora` is the inference LoRA trained for the relation (needed by methods with
    source 'relation_lora'), `trained_loras` those of the 'trained' methods by slug; `relation_name` fills the VLM question's {relation} (default: the
    id). `progress(done, total)` is called after every generated video.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    relation_name = relation_name or relation
    prompts = eval_prompts(relation, config)
    loras = {method.slug: resolve_lora(method, relation, relation_lora, trained_loras) for method in config.methods}
    ensure_tiny_eval_models(config)
    check_metric_inputs(config, prompts)
    jobs = plan_videos(config.methods, prompts, config.seeds)

    started = time.perf_counter()
    counts = generate_videos(jobs, loras, out, config.sample, base, progress)
    generated_at = time.perf_counter()

    models = load_metric_models(config)
    try:
        reference = None
        if models.i3d is not None:
            reference = reference_features(models.i3d, config, out / FVD_DIR)
        methods = []
        for method in tqdm(config.methods, desc="evaluate: score", unit="method", disable=None):
            methods.append(
                score_method(method, jobs[method.slug], out, models, config, relation_name, reference, loras[method.slug])
            )
            log.info("%s [%s]: %s", relation, method.name, headline(methods[-1]))
    finally:
        models.close()

    results = {
        "version": RESULTS_VERSION,
        "relation": relation,
        "relation_name": relation_name,
        "prompts": prompts,
        "seeds": list(config.seeds),
        "videos_per_method": len(prompts) * len(config.seeds),
        "generation": counts,
        "timings_s": {
            "generate": round(generated_at - started, 3),
            "score": round(time.perf_counter() - generated_at, 3),
        },
        "config": config.model_dump(mode="json"),
        "methods": methods,
    }
    return write_relation_results(out, results)
