"""The cache of extracted rows, in one place: what it keeps and how rows are reused, published
and adopted (:mod:`.reuse`), and what the runs use of it, which is what ``cache prune`` may
delete (:mod:`.usage`). The command is ``python -m pipeline cache`` (pipeline/commands/data.py)."""
