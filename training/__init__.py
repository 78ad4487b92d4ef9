"""Training from support transcripts (LoRA fine-tuning, evaluation, model registry). Not built yet."""
