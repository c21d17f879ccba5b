"""``politician-lm prepare`` (the verb is ``politician_lm.commands.prepare``): raw sources in, JSONL records out.

Everything up to ``build`` is text work without a tokenizer, so every input is read and checked before anything
heavy loads. Problems raise ``UserError`` naming ``file:line``; ``files.BadLine`` (one record) and ``files.BadFile``
(one whole file) are the kinds that ``--skip_bad`` skips and counts instead.

* ``files``: finding input files in folders and reading them as UTF-8.
* ``clean``: stage directions, Markdown, posts, sentence splitting.
* ``transcripts``: speaker-labelled turns of interviews, paragraphs of speeches.
* ``tables``: rows of CSV, JSON and JSONL tables, and the prompt made from each row.
* ``identity``: the identity template and the profile values that fill it.
* ``build``: records from the parsed inputs, cut to the token limits.
* ``dedupe``, ``split``, ``stats``: duplicates and clusters, the train/val split, ``stats.json``.
* ``pipeline``: reading every input, loading the tokenizer, building the records, writing the output folder.
"""
