"""QC figures, HTML reports and their output names; no Nipype, no PyBIDS, no torch."""
