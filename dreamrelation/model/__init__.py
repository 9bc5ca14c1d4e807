"""The method: configs, base-model families, LoRA, losses, training, sampling (METHOD.md §2-§5)."""

# diffusers' Mochi RoPE asks for float32 CPU autocast on every forward pass and warns each time
# (harmless). The CLI and the study's worker processes silence exactly this message.
CPU_AUTOCAST_WARNING = "In CPU autocast, but the target dtype is not supported"
