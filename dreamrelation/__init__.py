"""dreamrelation-pipeline: DreamRelation relation-LoRA training as a Prefect pipeline."""

__version__ = "0.1.0"
