"""bids_infantseg: QuickNAT segmentation of first-year infant T2w brain MRI as a BIDS App."""

__version__ = "0.1.0"
