"""Data: records, prompt templates, tokenization and the DataModule. Imports nothing from model/callbacks/cli."""
