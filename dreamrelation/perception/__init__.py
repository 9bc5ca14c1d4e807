"""Perception: pretrained or programmatic "eyes" that look at videos, for the masks and the evaluation.

`segment` finds and tracks the two subjects (Grounding DINO + SAM2, transformers
implementations) for the make_masks stage. `metrics` holds CLIP (CLIP-T, temporal consistency)
and the I3D / Fréchet distance of FVD, `vlm` the vision-language judge of relation accuracy;
`config` their settings. Models are read from local folders; the demo builds tiny random ones.

`judge` is the relation judge for the relational toy world (issue 13 §3): it segments the two
subjects, tracks them, and classifies the relation and each subject's kind and contrast. It is
plain numpy + cv2 (no model weights); its two small classifiers are fitted on ground-truth world
clips and stored in `judge_params.json` beside it.
"""
