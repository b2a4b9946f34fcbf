"""BIDS input and output: finding scans with PyBIDS, opening and checking images, BIDS names,
derivative files and their sidecars, TemplateFlow templates."""
