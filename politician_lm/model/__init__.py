"""Model: base loading, quantization, LoRA and the LightningModule. Imports nothing from data/callbacks/cli."""
