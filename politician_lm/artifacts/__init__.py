"""The project's own file formats in one place: atomic writes, JSONL, adapter folders, profiles, role labels."""
