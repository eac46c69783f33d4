"""Label ids fixed for every compact checkpoint (no torch or transformers here, so lean readers can import it)."""

# CTC blank first, then the catch-all for characters outside the alphabet; alphabet[i] is label i + 2.
BLANK_ID = 0
UNK_ID = 1
SPECIAL_LABELS = ("<blank>", "<unk>")
