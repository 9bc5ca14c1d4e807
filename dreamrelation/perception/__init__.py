"""Perception for evaluation: programmatic "eyes" that look at generated videos.

`judge` is the relation judge for the relational toy world (issue 13 §3): it segments the two
subjects, tracks them, and classifies the relation and each subject's kind and contrast. It is
plain numpy + cv2 (no model weights); its two small classifiers are fitted on ground-truth world
clips and stored in `judge_params.json` beside it.
"""
