"""Stage bodies, one module per stage that runs models: read these artifacts, run these models, write this artifact.

E.g. `latents` (encode_latents), `masks` (make_masks), `training` (the train_relation stage's
inputs), `evaluate` (evaluate one relation). The pure stages (select_clips, write_captions)
are `data.select` / `data.captions`. No Prefect here: `tasks/` wraps these with the store's
skip/commit/event policy. Layering: docs/architecture.md.
"""
