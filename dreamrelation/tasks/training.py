"""Task of the train_relation stage: read the stores, train the relation LoRAs, keep the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from dreamrelation.config import PipelineConfig
from dreamrelation.data.previews import format_sig, frame_strip
from dreamrelation.data.store import ArtifactStore
from dreamrelation.data.video import read_video
from dreamrelation.model.config import TrainConfig
from dreamrelation.model.train import train
from dreamrelation.evaluation.config import EvalMethod
from dreamrelation.plan import plan_relation, trained_key
from dreamrelation.stages.training import load_training_clips
from dreamrelation.tasks.common import StageResult, run_stage
from dreamrelation.tasks.ui import Progress, artifact_key, publish_image

#: Folder of the periodic training samples in the run folder (model.train / TrainingSampler).
SAMPLES_DIR = "samples"
#: Training-sample pictures one run publishes at most.
MAX_SAMPLE_IMAGES = 12


@task(name="train-relation", cache_policy=NO_CACHE)
def train_relation_task(
    relation: str, config: PipelineConfig, force: bool = False, method: EvalMethod | None = None
) -> StageResult:
    """Train on the relation's latents + masks; a rerun resumes from the run's last checkpoint.

    With `method` (an evaluation method of source 'trained'), train that baseline's LoRA instead.
    """
    store = ArtifactStore(config.root)
    plan = plan_relation(relation, config)
    latents_uri = store.require(plan["encode_latents"].key)
    masks_uri = store.require(plan["make_masks"].key)
    artifact = plan["train_relation"] if method is None else plan[trained_key(method.slug)]
    train_cfg = config.train if method is None else config.method_train(method)
    label = (relation,) if method is None else (relation, method.slug)

    def build(run_dir: str, summary: dict[str, Any]) -> None:
        data = load_training_clips(latents_uri, masks_uri, train_cfg.min_clips)
        samples = SamplePublisher(" ".join(label), Path(run_dir) / SAMPLES_DIR, train_cfg)
        with Progress(artifact_key(*label, "train-steps"), train_cfg.steps, "training steps") as bar:

            def on_step(record: dict[str, Any]) -> None:
                bar.update(record["step"], note=loss_note(record))
                samples.poll(record["step"])

            result = train(
                data.clips,
                data.empty_text,
                data.vae_norm,
                train_cfg,
                run_dir,
                config.model,
                on_step=on_step,
                # remote roots: upload each checkpoint, so a killed worker's rerun anywhere resumes
                on_checkpoint=lambda _: store.sync_up(run_dir, artifact.key),
            )
        samples.poll()
        create_table_artifact(
            key=artifact_key(*label, "lora-parameters"),
            table=result.parameter_table,
            description=f"Trainable parameters per adapter ({' '.join(label)})",
        )
        summary.update(
            clips=len(data.clips),
            steps=result.final_step,
            resumed_from=result.resumed_from,
            loss_rec=result.loss_rec,
            loss_rcl=result.loss_rcl,
            lora=str(result.lora_path.name) if result.lora_path else None,
            left_out=data.left_out,
        )

    return run_stage(store, artifact, build, force, resumable=True)


def loss_note(record: dict[str, Any]) -> str:
    """`loss_rec 0.1234 · loss_rcl 0.5678 · group relation` for the progress artifact."""
    parts = [f"loss_rec {format_sig(record.get('loss_rec'))}"]
    if record.get("loss_rcl") is not None:
        parts.append(f"loss_rcl {format_sig(record['loss_rcl'])}")
    if record.get("group"):
        parts.append(f"group {record['group']}")
    return " · ".join(parts)


class SamplePublisher:
    """Publishes the periodic training samples (`samples/step-*.mp4`) as frame-strip image artifacts.

    The training loop writes a sample after the step's `on_step` call, so `poll(step)` (every
    step) finds the previous sample step's video complete, and `poll()` after training the last.
    At most `limit` pictures per run: with more sample steps, every k-th and the last one.
    """

    def __init__(self, relation: str, samples_dir: Path, train_config: TrainConfig, limit: int = MAX_SAMPLE_IMAGES):
        self.relation = relation
        self.samples_dir = samples_dir
        self.every = train_config.sample_every
        self.last = train_config.steps
        self.prompt = train_config.sample_prompt
        count = train_config.steps // self.every if self.every > 0 else 0
        self.stride = max(1, -(-count // limit)) if count else 1
        self.published: set[int] = set()

    def describe(self, step: int) -> str:
        """`step 200 of 2400: training sample of A058 (first / middle / last frame): 'prompt'`.

        The step comes first: an artifact card shows the first line of the description, and the
        samples of one run are versions of one key, so the step is what tells them apart.
        """
        return (
            f"step {step} of {self.last}: training sample of {self.relation} "
            f"(first / middle / last frame): {self.prompt!r}"
        )

    def wanted(self, step: int) -> bool:
        return step == self.last or (step // self.every) % self.stride == 0

    def poll(self, step: int | None = None) -> list[int]:
        """Publish samples not yet published; with `step`, only look when a sample may be new."""
        if self.every <= 0 or (step is not None and (step - 1) % self.every != 0):
            return []
        found = []
        for path in sorted(self.samples_dir.glob("step-*.mp4")):
            sample_step = int(path.stem.split("-")[1])
            if sample_step in self.published or not self.wanted(sample_step):
                continue
            self.published.add(sample_step)
            try:
                frames, _ = read_video(path)
            except (OSError, ValueError) as exc:
                get_run_logger().warning("training sample %s unreadable, not published: %s", path.name, exc)
                continue
            publish_image(artifact_key(self.relation, "train-sample"), frame_strip(frames), self.describe(sample_step))
            found.append(sample_step)
        return found
