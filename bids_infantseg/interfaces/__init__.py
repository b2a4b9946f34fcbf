"""Nipype interfaces: thin wrappers that read files, call array code and write files."""
