"""The verbs of ``politician-lm`` other than the trainer ones: thin typed functions over the library."""
