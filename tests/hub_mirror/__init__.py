"""Random-weight files in the on-disk layouts real downloads produce, for offline end-to-end tests."""
