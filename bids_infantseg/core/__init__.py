"""Array code on images and label maps (no Nipype, no PyBIDS): conforming to the model grid,
applying the network, pose, refinement, QC, volumes, overlap metrics and ages."""
