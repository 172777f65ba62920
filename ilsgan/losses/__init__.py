"""ILSGAN losses: adversarial + R1, mask priors, and the independence (ILS) term."""
