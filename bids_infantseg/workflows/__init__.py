"""Nipype workflows: the embeddable per-scan segmentation workflow, its BIDS-Derivatives
writers, and the resource plan (threads, memory, plugin) that every node asks for."""
