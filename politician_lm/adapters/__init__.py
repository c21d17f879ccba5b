"""Adapters after training: read and validate PEFT folders, merge them with weights, merge into the base."""
