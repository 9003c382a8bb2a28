"""Security wrappers: token decoding, URL signing, handle links, credits and signed reports.
Each secure default lives in one place here."""
