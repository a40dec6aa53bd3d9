"""StyleSpace analysis (DESIGN.md step 4): how each style layer responds to each 3DMM attribute, and the
attribute-adaptive layer selection that gives each editing network F^i its reduced StyleSpace S^i."""
